#!/usr/bin/env python3
"""Benchmark nightcast-image against its peers on generated VM-like images.

Generates a master image v1 and its next version v2 (about 2 % rewritten, a few insertions) with
gen-vm-image.py, then measures, all in the same run so that every ratio compares numbers taken on
the same machine at the same time:

  sweep     average chunk size 16/64/256/1024 KiB: import throughput, store size, v1->v2 delta,
            manifest size (and extrapolated to a 40 GB master)
  peers     `nightcast-image build` vs `casync make` (blob index) and `zstd -T0 -3` on v1:
            wall time, throughput, store size, peak RSS
  delta     v1->v2: nightcast new stored bytes vs casync store growth
  assemble  `nightcast-image assemble` vs `cp --sparse=always` (warm cache, second of two runs),
            and `nightcast-image verify`
  rates     b3sum (1 thread, all threads) and zstd -3 -T0 on v1, for reference

It builds nothing: run `cargo build --release -p image-tools` first. Needs casync, zstd, b3sum and
python3 (stdlib only). Tables are printed as markdown to stdout (and to --out FILE if given);
progress goes to stderr. Timing uses time.monotonic(); `sync` runs before every timed command;
peak RSS is ru_maxrss of the child from os.wait4 (KiB on Linux).

    python3 bench/run.py --size 2G
    python3 bench/run.py --size 4G --only peers
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "nightcast-image")
DEFAULT_GEN = os.path.normpath(os.path.join(REPO, "..", "shared", "bench", "gen-vm-image.py"))
SWEEP_KIB = (16, 64, 256, 1024)
SECTIONS = ("sweep", "peers", "delta", "assemble", "rates")
MASTER_40GB = 40e9


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Result:
    def __init__(self, secs, maxrss_kib, stdout):
        self.secs = secs
        self.maxrss_kib = maxrss_kib
        self.stdout = stdout


def run(cmd, timed=True, stdout_devnull=False):
    """Runs cmd; returns wall seconds, the child's peak RSS (KiB) and its stdout. Fails loudly."""
    if timed:
        subprocess.run(["sync"], check=True)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdout = subprocess.DEVNULL if stdout_devnull else out
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        _, status, rusage = os.wait4(p.pid, 0)
        secs = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if p.returncode != 0:
            sys.stderr.write(err.read().decode(errors="replace"))
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return Result(secs, rusage.ru_maxrss, text)


def tree_bytes(path):
    """Sum of the sizes of the regular files under path (like `du -sb`, without directory sizes)."""
    total = files = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size
            files += 1
    return total, files


def mbps(nbytes, secs):
    return nbytes / 1e6 / secs


def fmt_bytes(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Bench:
    def __init__(self, args, workdir):
        self.a = args
        self.w = workdir
        self.bin = args.bin
        self.out = []  # markdown blocks
        self.key = os.path.join(workdir, "key")
        self.pub = self.key + ".pub"
        self.v1 = os.path.join(workdir, "v1.img")
        self.v2 = os.path.join(workdir, "v2.img")
        self.size = 0
        self.default_store = os.path.join(workdir, "store-default")
        self.casync_store = os.path.join(workdir, "casync.castr")
        self.v1m = os.path.join(workdir, "v1.m")
        self.have_default_v1 = False
        self.have_casync_v1 = False

    def p(self, p):
        return os.path.join(self.w, p)

    def emit(self, title, body, note=None):
        block = f"### {title}\n\n{body}\n"
        if note:
            block += f"\n{note}\n"
        self.out.append(block)
        print(block, flush=True)

    def build_cmd(self, store, image, manifest, version, avg_kib=None):
        cmd = [self.bin, "build", "--store", store, "--key", self.key, "--name", "bench",
               "--version", version, "-o", manifest, "--json"]
        if avg_kib is not None:
            cmd += ["--avg-chunk-kib", str(avg_kib)]
        return cmd + [image]

    def setup(self, need_v2):
        gen = [sys.executable, self.a.gen]
        procs = [subprocess.Popen(gen + [self.v1, "--size", self.a.size, "--seed", "1"])]
        if need_v2:
            procs.append(subprocess.Popen(gen + [self.v2, "--size", self.a.size, "--seed", "1",
                                                 "--evolve", "0.02"]))
        log(f"generating v1{' and v2' if need_v2 else ''} ({self.a.size}) in {self.w}")
        for pr in procs:
            if pr.wait() != 0:
                raise SystemExit("image generation failed")
        self.size = os.path.getsize(self.v1)
        run([self.bin, "keygen", "--out", self.key], timed=False)

    # a) chunk-size sweep
    def sweep(self):
        rows = []
        for kib in SWEEP_KIB:
            store = self.p(f"store-{kib}")
            m1, m2 = self.p(f"v1-{kib}.m"), self.p(f"v2-{kib}.m")
            log(f"sweep {kib} KiB: build v1")
            r1 = run(self.build_cmd(store, self.v1, m1, "v1", kib))
            store_bytes, nchunks = tree_bytes(os.path.join(store, "chunks"))
            log(f"sweep {kib} KiB: build v2")
            r2 = run(self.build_cmd(store, self.v2, m2, "v2", kib))
            delta = json.loads(r2.stdout)["new_stored_bytes"]
            diff = json.loads(run([self.bin, "diff", m1, m2, "--json"], timed=False).stdout)
            check = "ok" if diff["new_stored_bytes"] == delta else f"MISMATCH diff={diff['new_stored_bytes']}"
            msize = os.path.getsize(m1)
            rows.append([
                kib, f"{mbps(self.size, r1.secs):.0f}", f"{r1.secs:.1f}", f"{store_bytes:,}", f"{nchunks:,}",
                f"{delta:,}", f"{delta / self.size * 100:.2f} %", check, f"{msize:,}",
                fmt_bytes(msize / self.size * MASTER_40GB), f"{r1.maxrss_kib / 1024:.0f}",
            ])
            shutil.rmtree(store)
        self.emit(
            f"Chunk-size sweep ({fmt_bytes(self.size)} image, fresh store each)",
            table(["avg chunk KiB", "v1 import MB/s", "v1 import s", "store after v1 (B)",
                   "chunk files", "v2 delta stored (B)", "delta / image", "diff cross-check",
                   "v1 manifest (B)", "manifest for 40 GB", "import peak RSS MiB"], rows),
            "v2 delta = `new_stored_bytes` of `build --json` for v2 into the store holding v1; "
            "cross-checked against `nightcast-image diff v1.m v2.m --json`.")

    def ensure_default_v1(self, timed_result=None):
        if not self.have_default_v1:
            log("nightcast build v1 (default chunk size) into the shared store")
            run(self.build_cmd(self.default_store, self.v1, self.v1m, "v1"), timed=False)
            self.have_default_v1 = True

    def ensure_casync_v1(self):
        if not self.have_casync_v1:
            log("casync make v1 into the shared store")
            run(["casync", "make", "--store=" + self.casync_store, self.p("v1.caibx"), self.v1],
                timed=False)
            self.have_casync_v1 = True

    # b) peers
    def peers(self):
        log("peers: nightcast build v1")
        nc = run(self.build_cmd(self.default_store, self.v1, self.v1m, "v1"))
        self.have_default_v1 = True
        nc_store = tree_bytes(self.default_store)
        log("peers: casync make v1")
        ca = run(["casync", "make", "--store=" + self.casync_store, self.p("v1.caibx"), self.v1])
        self.have_casync_v1 = True
        ca_store = tree_bytes(self.casync_store)
        log("peers: zstd -T0 -3")
        zs = run(["zstd", "-q", "-T0", "-3", "-c", self.v1], stdout_devnull=True)
        rows = []
        for name, r, st in (("nightcast-image build", nc, nc_store),
                            ("casync make (default: zstd, avg 64K)", ca, ca_store),
                            ("zstd -T0 -3 -c > /dev/null", zs, None)):
            rows.append([name, f"{r.secs:.2f}", f"{mbps(self.size, r.secs):.0f}",
                         f"{nc.secs and r.secs / nc.secs:.2f}",
                         f"{st[0]:,} ({st[1]:,} files)" if st else "n/a",
                         f"{r.maxrss_kib / 1024:.1f}"])
        self.emit(
            f"Import vs peers ({fmt_bytes(self.size)} image v1, default chunk size, fresh stores)",
            table(["tool", "wall s", "MB/s", "time / nightcast time", "store bytes", "peak RSS MiB"], rows),
            f"nightcast/casync throughput ratio: **{ca.secs / nc.secs:.2f}x**; "
            f"nightcast/zstd throughput ratio: **{zs.secs / nc.secs:.2f}x**; "
            f"store size nightcast/casync: **{nc_store[0] / ca_store[0]:.3f}**. "
            "casync's default compression is zstd (chunk files start with the zstd magic 28 b5 2f fd), "
            "so no separate `--compression=zstd` run. nightcast's time includes its final syncfs; "
            "casync's does not include a sync.")

    # c) delta
    def delta(self):
        self.ensure_default_v1()
        self.ensure_casync_v1()
        v2m = self.p("v2.m")
        log("delta: nightcast build v2")
        r = run(self.build_cmd(self.default_store, self.v2, v2m, "v2"))
        nc_new = json.loads(r.stdout)
        diff = json.loads(run([self.bin, "diff", self.v1m, v2m, "--json"], timed=False).stdout)
        before = tree_bytes(self.casync_store)
        log("delta: casync make v2")
        ca = run(["casync", "make", "--store=" + self.casync_store, self.p("v2.caibx"), self.v2])
        after = tree_bytes(self.casync_store)
        ca_bytes, ca_files = after[0] - before[0], after[1] - before[1]
        nb = nc_new["new_stored_bytes"]
        rows = [
            ["nightcast-image build (default chunk size)", f"{nb:,}", f"{nc_new['new_chunks']:,}",
             f"{nb / self.size * 100:.2f} %", f"{r.secs:.2f}"],
            ["casync make (store growth)", f"{ca_bytes:,}", f"{ca_files:,}",
             f"{ca_bytes / self.size * 100:.2f} %", f"{ca.secs:.2f}"],
        ]
        self.emit(
            "Delta v1 -> v2 (bytes a site holding v1 must fetch)",
            table(["tool", "new stored bytes", "new chunks", "of image size", "v2 import s"], rows),
            f"nightcast/casync delta bytes: **{nb / ca_bytes:.3f}**. `diff v1.m v2.m --json` says "
            f"new_stored_bytes = {diff['new_stored_bytes']:,} "
            f"({'matches' if diff['new_stored_bytes'] == nb else 'DOES NOT match'} the build report).")

    # d) assemble vs cp
    def assemble(self):
        self.ensure_default_v1()
        out = self.p("assembled.img")
        copy = self.p("copy.img")
        times = {"assemble": [], "cp": [], "verify": []}
        sync_after_cp = None
        for i in range(2):
            for f in (out, copy):
                if os.path.exists(f):
                    os.remove(f)
            log(f"assemble run {i + 1}")
            times["assemble"].append(run([self.bin, "assemble", "--store", self.default_store,
                                          "--pubkey", self.pub, self.v1m, out]))
            log(f"cp run {i + 1}")
            times["cp"].append(run(["cp", "--sparse=always", self.v1, copy]))
            t0 = time.monotonic()
            subprocess.run(["sync"], check=True)
            sync_after_cp = time.monotonic() - t0
            log(f"verify run {i + 1}")
            times["verify"].append(run([self.bin, "verify", "--store", self.default_store,
                                        "--pubkey", self.pub, self.v1m]))
        with open(out, "rb") as a, open(self.v1, "rb") as b:
            same = True
            while True:
                x, y = a.read(8 << 20), b.read(8 << 20)
                if x != y:
                    same = False
                    break
                if not x:
                    break
        asm, cp, ver = times["assemble"][1], times["cp"][1], times["verify"][1]
        rows = [
            ["nightcast-image assemble", f"{asm.secs:.2f}", f"{mbps(self.size, asm.secs):.0f}",
             f"{times['assemble'][0].secs:.2f}", f"{asm.maxrss_kib / 1024:.1f}"],
            ["cp --sparse=always", f"{cp.secs:.2f}", f"{mbps(self.size, cp.secs):.0f}",
             f"{times['cp'][0].secs:.2f}", f"{cp.maxrss_kib / 1024:.1f}"],
            ["cp --sparse=always + the sync after it", f"{cp.secs + sync_after_cp:.2f}",
             f"{mbps(self.size, cp.secs + sync_after_cp):.0f}", "", ""],
            ["nightcast-image verify", f"{ver.secs:.2f}", f"{mbps(self.size, ver.secs):.0f}",
             f"{times['verify'][0].secs:.2f}", f"{ver.maxrss_kib / 1024:.1f}"],
        ]
        self.emit(
            "Assemble vs copy (v1, same disk, warm page cache: second of two runs reported)",
            table(["command", "wall s (run 2)", "MB/s", "run 1 s", "peak RSS MiB"], rows),
            f"speed ratio cp_time / assemble_time: **{cp.secs / asm.secs:.2f}** (target >= 0.70); "
            f"with cp's data synced too: {(cp.secs + sync_after_cp) / asm.secs:.2f}. "
            "The page cache cannot be dropped without privileges, so both read warm data. "
            "assemble fsyncs its output before renaming it; cp does not. "
            f"Assembled image identical to v1.img: {'yes' if same else 'NO'}.")

    # e) reference rates
    def rates(self):
        rows = []
        for name, cmd in (("b3sum --num-threads 1", ["b3sum", "--num-threads", "1", self.v1]),
                          ("b3sum (all threads)", ["b3sum", self.v1]),
                          ("zstd -3 -T0", ["zstd", "-q", "-3", "-T0", "-c", self.v1])):
            log(f"rates: {name}")
            r = run(cmd, stdout_devnull=True)
            rows.append([name, f"{r.secs:.2f}", f"{mbps(self.size, r.secs):.0f}"])
        self.emit(f"Hash and compression rates on v1 ({fmt_bytes(self.size)}, warm cache)",
                  table(["command", "wall s", "MB/s"], rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="nightcast-image binary (default: %(default)s)")
    ap.add_argument("--size", default="2G", help="image size, e.g. 2G, 512M (default: %(default)s)")
    ap.add_argument("--workdir", help="work directory (default: a fresh temp dir under /var/tmp, "
                    "removed at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--gen", default=DEFAULT_GEN, help="gen-vm-image.py (default: %(default)s)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, among {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--out", help="also write the markdown tables to this file")
    a = ap.parse_args()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose among {SECTIONS}")
    parse_size(a.size)
    for tool, needed in ((a.bin, True), ("casync", "peers" in only or "delta" in only),
                         ("zstd", "peers" in only or "rates" in only), ("b3sum", "rates" in only)):
        if needed and not shutil.which(tool) and not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} not found (build with `cargo build --release -p image-tools`)")
    if not os.path.isfile(a.gen):
        raise SystemExit(f"generator {a.gen} not found (use --gen)")

    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
        workdir, remove = a.workdir, False
    else:
        workdir, remove = tempfile.mkdtemp(prefix="nightcast-bench-", dir="/var/tmp"), not a.keep
    b = Bench(a, workdir)
    try:
        b.setup(need_v2=("sweep" in only or "delta" in only))
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "unknown"
        header = (f"## nightcast-image benchmarks: {fmt_bytes(b.size)} image ({b.size:,} bytes)\n\n"
                  f"Run {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
                  f"tree {rev}, binary {a.bin}; sections: {', '.join(only)}.\n")
        b.out.append(header)
        print(header, flush=True)
        for section in SECTIONS:
            if section in only:
                getattr(b, section)()
        if a.out:
            with open(a.out, "w") as f:
                f.write("\n".join(b.out))
    finally:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")


if __name__ == "__main__":
    main()
