#!/usr/bin/env python3
"""Benchmark nightcast-image against its peers on generated VM-like images.

Generates a master image v1 and its next version v2 (about 2 % rewritten, a few insertions) with
gen-vm-image.py, then measures, all in the same run so that every ratio compares numbers taken on
the same machine at the same time:

  sweep     average chunk size 16/64/256/1024 KiB: import throughput, store size, v1->v2 delta,
            manifest size (and extrapolated to a 40 GB master)
  peers     `nightcast-image build` (into a file store and into a pack store, see --formats) vs
            `casync make` (blob index) and `zstd -T0 -3` on v1: wall time, CPU time,
            throughput, store size, peak RSS
  delta     v1->v2: nightcast new stored bytes vs casync store growth
  assemble  `nightcast-image assemble` (from each store format) vs `cp --sparse=always` (warm
            cache, second of two runs), and `nightcast-image verify`
  rates     b3sum (1 thread, all threads) and zstd -3 -T0 on v1, for reference

It builds nothing: run `cargo build --release -p image-tools` first. Needs casync, zstd, b3sum and
python3 (stdlib only). Tables are printed as markdown to stdout (and to --out FILE if given);
progress goes to stderr. Timing uses time.monotonic(); `sync` runs before every timed command;
peak RSS is the child's ru_maxrss from wait4 (KiB), taken through GNU time so
that this script's own memory does not leak into it (see `run`).

    python3 bench/run.py --size 2G
    python3 bench/run.py --size 4G --only peers
    python3 bench/run.py --size 2G --only peers,assemble --repeat 3 --formats files,packs
    python3 bench/run.py --image /var/tmp/nightcast-pairs/v1.img --only peers,assemble --repeat 3

--image takes an existing image as v1 (a real system's disk, such as the Debian images
bench/real_pairs.py builds) instead of generating one; sections that need v2 are refused with it.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "nightcast-image")
DEFAULT_GEN = os.path.normpath(os.path.join(REPO, "..", "shared", "bench", "gen-vm-image.py"))
SWEEP_KIB = (16, 64, 256, 1024)
SECTIONS = ("sweep", "peers", "delta", "assemble", "rates")
FORMATS = ("files", "packs")
MASTER_40GB = 40e9


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Result:
    def __init__(self, secs, maxrss_kib, stdout, cpu_secs, other_cpu_secs):
        self.secs = secs
        self.maxrss_kib = maxrss_kib
        self.stdout = stdout
        self.cpu_secs = cpu_secs  # the command's user + sys
        self.other_cpu_secs = other_cpu_secs  # CPU the rest of the machine used meanwhile (noise)


def busy_cpu_secs():
    """CPU seconds the whole machine has been busy (all but idle and iowait), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user and nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


GNU_TIME = "/usr/bin/time"


QUIET = {"max_wait": 120.0, "waited": 0.0, "gave_up": 0}


def wait_quiet():
    """Waits (up to QUIET['max_wait'] s) until the rest of the machine uses under 0.2 core."""
    t0 = time.monotonic()
    while True:
        b0 = busy_cpu_secs()
        time.sleep(0.5)
        if (busy_cpu_secs() - b0) / 0.5 < 0.2:
            break
        if time.monotonic() - t0 > QUIET["max_wait"]:
            QUIET["gave_up"] += 1
            break
    QUIET["waited"] += time.monotonic() - t0


def run(cmd, timed=True, stdout_devnull=False):
    """Runs cmd; returns wall seconds, the child's peak RSS (KiB) and its stdout. Fails loudly.

    Peak RSS: os.wait4's ru_maxrss for the child. Linux carries the high-water mark of the memory
    the child had before exec (Python's, as subprocess forks or vforks this process) into that
    value, so it can never read below this script's own peak RSS. The child is therefore started
    through GNU time (`/usr/bin/time -f %M`, itself about 1 MiB), whose report is ru_maxrss from
    wait4 of a child forked from a tiny process; the os.wait4 value is used only without GNU time.
    """
    if timed:
        subprocess.run(["sync"], check=True)
        wait_quiet()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss_file:
        wrapped = cmd
        if os.access(GNU_TIME, os.X_OK):
            wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", rss_file.name] + cmd
        stdout = subprocess.DEVNULL if stdout_devnull else out
        busy0 = busy_cpu_secs()
        t0 = time.monotonic()
        p = subprocess.Popen(wrapped, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        _, status, rusage = os.wait4(p.pid, 0)
        secs = time.monotonic() - t0
        busy = busy_cpu_secs() - busy0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if p.returncode != 0:
            sys.stderr.write(err.read().decode(errors="replace"))
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
        maxrss = rusage.ru_maxrss
        cpu = rusage.ru_utime + rusage.ru_stime
        if wrapped is not cmd:
            last = (rss_file.read().strip().splitlines() or [""])[-1].split()
            if len(last) == 3:
                maxrss, cpu = int(last[0]), float(last[1]) + float(last[2])
    return Result(secs, maxrss, text, cpu, max(0.0, busy - cpu))


def tree_bytes(path):
    """Sum of the sizes of the regular files under path (like `du -sb`, without directory sizes)."""
    total = files = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size
            files += 1
    return total, files


def files_equal(a_path, b_path):
    with open(a_path, "rb") as a, open(b_path, "rb") as b:
        while True:
            x, y = a.read(8 << 20), b.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


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
        # One store per format for the peers and assemble sections ("files" is default_store).
        self.stores = {"files": self.default_store, "packs": os.path.join(workdir, "store-packs")}
        self.formats = [f for f in args.formats.split(",") if f]
        self.casync_store = os.path.join(workdir, "casync.castr")
        self.v1m = os.path.join(workdir, "v1.m")
        self.have_default_v1 = False
        self.have_casync_v1 = False
        self.have_v1 = set()  # formats other than "files" holding v1

    def p(self, p):
        return os.path.join(self.w, p)

    def emit(self, title, body, note=None):
        block = f"### {title}\n\n{body}\n"
        if note:
            block += f"\n{note}\n"
        self.out.append(block)
        print(block, flush=True)

    def build_cmd(self, store, image, manifest, version, avg_kib=None, fmt="files"):
        cmd = [self.bin, "build", "--store", store, "--key", self.key, "--name", "bench",
               "--version", version, "-o", manifest, "--json", "--store-format", fmt]
        if avg_kib is not None:
            cmd += ["--avg-chunk-kib", str(avg_kib)]
        return cmd + [image]

    def setup(self, need_v2):
        # Work on a copy: the tree may be rebuilt while the benchmark runs.
        snap = os.path.join(self.w, "nightcast-image")
        shutil.copy2(self.bin, snap)
        self.bin = snap
        with open(snap, "rb") as f:
            self.bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        if self.a.image:
            # Read in place (zstd ignores a symbolic link).
            self.v1 = os.path.realpath(self.a.image)
            self.size = os.path.getsize(self.v1)
            run([self.bin, "keygen", "--out", self.key], timed=False)
            return
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
                kib, f"{mbps(self.size, r1.secs):.0f}", f"{r1.secs:.1f}", f"{r1.cpu_secs:.1f}",
                f"{r1.other_cpu_secs:.1f}", f"{store_bytes:,}", f"{nchunks:,}",
                f"{delta:,}", f"{delta / self.size * 100:.2f} %", check, f"{msize:,}",
                fmt_bytes(msize / self.size * MASTER_40GB), f"{r1.maxrss_kib / 1024:.0f}",
            ])
            shutil.rmtree(store)
        self.emit(
            f"Chunk-size sweep ({fmt_bytes(self.size)} image, fresh store each)",
            table(["avg chunk KiB", "v1 import MB/s", "v1 import s", "CPU s", "other CPU s",
                   "store after v1 (B)",
                   "chunk files", "v2 delta stored (B)", "delta / image", "diff cross-check",
                   "v1 manifest (B)", "manifest for 40 GB", "import peak RSS MiB"], rows),
            "v2 delta = `new_stored_bytes` of `build --json` for v2 into the store holding v1; "
            "cross-checked against `nightcast-image diff v1.m v2.m --json`.")

    def ensure_default_v1(self):
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
        reps = max(1, self.a.repeat)
        nc_runs = {f: [] for f in self.formats}
        ca_runs, zs_runs = [], []
        for i in range(reps):
            for d in list(self.stores.values()) + [self.casync_store]:
                shutil.rmtree(d, ignore_errors=True)
            for f in self.formats:
                log(f"peers {i + 1}/{reps}: nightcast build v1 into a {f} store")
                nc_runs[f].append(run(self.build_cmd(self.stores[f], self.v1, self.manifest_of(f),
                                                     "v1", fmt=f)))
            log(f"peers {i + 1}/{reps}: casync make v1")
            ca_runs.append(run(["casync", "make", "--store=" + self.casync_store,
                                self.p("v1.caibx"), self.v1]))
            log(f"peers {i + 1}/{reps}: zstd -T0 -3")
            zs_runs.append(run(["zstd", "-q", "-T0", "-3", "-c", self.v1], stdout_devnull=True))
        self.have_default_v1 = "files" in self.formats
        self.have_v1 = set(self.formats)
        self.have_casync_v1 = True
        stores = {f: tree_bytes(self.stores[f]) for f in self.formats}
        ca_store = tree_bytes(self.casync_store)
        med = lambda runs: sorted(r.secs for r in runs)[len(runs) // 2]
        ca, zs = med(ca_runs), med(zs_runs)
        first = med(nc_runs[self.formats[0]])
        rows = []
        named = [(f"nightcast-image build ({f} store)", nc_runs[f], stores[f]) for f in self.formats]
        named += [("casync make (default: zstd, avg 64K)", ca_runs, ca_store),
                  ("zstd -T0 -3 -c > /dev/null", zs_runs, None)]
        for name, runs, st in named:
            t = med(runs)
            rows.append([name, f"{t:.2f}", " / ".join(f"{r.secs:.2f}" for r in runs),
                         f"{mbps(self.size, t):.0f}", f"{first / t:.2f}",
                         f"{sorted(r.cpu_secs for r in runs)[len(runs) // 2]:.1f}",
                         " / ".join(f"{r.cpu_secs:.1f}" for r in runs),
                         " / ".join(f"{r.other_cpu_secs:.1f}" for r in runs),
                         f"{st[0]:,} ({st[1]:,} files)" if st else "n/a",
                         f"{max(r.maxrss_kib for r in runs) / 1024:.1f}"])
        notes = []
        for f in self.formats:
            nc = med(nc_runs[f])
            cpu = sorted(r.cpu_secs for r in nc_runs[f])[reps // 2]
            ca_cpu = sorted(r.cpu_secs for r in ca_runs)[reps // 2]
            zs_cpu = sorted(r.cpu_secs for r in zs_runs)[reps // 2]
            notes.append(
                f"{f} store: nightcast/casync throughput ratio **{ca / nc:.2f}x**, "
                f"nightcast/zstd **{zs / nc:.2f}x** (per round, casync: "
                + ", ".join(f"{c.secs / n.secs:.2f}x" for n, c in zip(nc_runs[f], ca_runs))
                + "; zstd: "
                + ", ".join(f"{z.secs / n.secs:.2f}x" for n, z in zip(nc_runs[f], zs_runs))
                + f"); CPU s casync/nightcast {ca_cpu / cpu:.2f}, zstd/nightcast {zs_cpu / cpu:.2f}; "
                f"store size nightcast/casync {stores[f][0] / ca_store[0]:.3f}.")
        self.emit(
            f"Import vs peers ({fmt_bytes(self.size)} image v1, default chunk size, fresh stores, "
            f"{reps} interleaved round{'s' if reps > 1 else ''}, median reported)",
            table(["tool", "wall s (median)", "each round s", "MB/s",
                   f"speed / nightcast ({self.formats[0]}) speed", "CPU s (user+sys, median)",
                   "CPU s each round", "other CPU s each round", "store bytes", "peak RSS MiB"],
                  rows),
            " ".join(notes) + " "
            "casync's default compression is zstd (chunk files start with the zstd magic 28 b5 2f fd), "
            "so no separate `--compression=zstd` run. nightcast's time includes making its chunks "
            "durable (syncfs for files, fdatasync per pack for packs); casync's does not include a sync.")

    def manifest_of(self, fmt):
        return self.v1m if fmt == "files" else self.p(f"v1-{fmt}.m")

    def ensure_v1(self, fmt):
        if fmt == "files":
            return self.ensure_default_v1()
        if fmt not in self.have_v1:
            log(f"nightcast build v1 into a {fmt} store")
            run(self.build_cmd(self.stores[fmt], self.v1, self.manifest_of(fmt), "v1", fmt=fmt),
                timed=False)
            self.have_v1.add(fmt)

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
        for f in self.formats:
            self.ensure_v1(f)
        out = self.p("assembled.img")
        copy = self.p("copy.img")
        times = {f"assemble-{f}": [] for f in self.formats}
        times.update({"cp": [], "verify": []})
        sync_after_cp = None
        same = {}
        for i in range(2):
            for f in self.formats:
                if os.path.exists(out):
                    os.remove(out)
                log(f"assemble from the {f} store, run {i + 1}")
                times[f"assemble-{f}"].append(run([self.bin, "assemble", "--store", self.stores[f],
                                                   "--pubkey", self.pub, self.manifest_of(f), out]))
                same[f] = files_equal(out, self.v1)
            if os.path.exists(copy):
                os.remove(copy)
            log(f"cp run {i + 1}")
            times["cp"].append(run(["cp", "--sparse=always", self.v1, copy]))
            t0 = time.monotonic()
            subprocess.run(["sync"], check=True)
            sync_after_cp = time.monotonic() - t0
            log(f"verify run {i + 1}")
            f0 = self.formats[0]
            times["verify"].append(run([self.bin, "verify", "--store", self.stores[f0],
                                        "--pubkey", self.pub, self.manifest_of(f0)]))
        cp, ver = times["cp"][1], times["verify"][1]
        rows = []
        for f in self.formats:
            asm = times[f"assemble-{f}"]
            rows.append([f"nightcast-image assemble ({f} store)", f"{asm[1].secs:.2f}",
                         f"{mbps(self.size, asm[1].secs):.0f}", f"{asm[0].secs:.2f}",
                         f"{asm[1].cpu_secs:.1f}", f"{asm[1].maxrss_kib / 1024:.1f}"])
        rows += [
            ["cp --sparse=always", f"{cp.secs:.2f}", f"{mbps(self.size, cp.secs):.0f}",
             f"{times['cp'][0].secs:.2f}", f"{cp.cpu_secs:.1f}", f"{cp.maxrss_kib / 1024:.1f}"],
            ["cp --sparse=always + the sync after it", f"{cp.secs + sync_after_cp:.2f}",
             f"{mbps(self.size, cp.secs + sync_after_cp):.0f}", "", "", ""],
            [f"nightcast-image verify ({self.formats[0]} store)", f"{ver.secs:.2f}",
             f"{mbps(self.size, ver.secs):.0f}", f"{times['verify'][0].secs:.2f}",
             f"{ver.cpu_secs:.1f}", f"{ver.maxrss_kib / 1024:.1f}"],
        ]
        ratios = "; ".join(
            f"{f} store: cp_time / assemble_time **{cp.secs / times[f'assemble-{f}'][1].secs:.2f}**"
            f" (with cp's data synced too: "
            f"{(cp.secs + sync_after_cp) / times[f'assemble-{f}'][1].secs:.2f})"
            for f in self.formats)
        self.emit(
            "Assemble vs copy (v1, same disk, warm page cache: second of two runs reported)",
            table(["command", "wall s (run 2)", "MB/s", "run 1 s", "CPU s (run 2)",
                   "peak RSS MiB"], rows),
            f"{ratios} (target >= 0.70). "
            "The page cache cannot be dropped without privileges, so both read warm data. "
            "assemble fsyncs its output before renaming it; cp does not. "
            "Assembled image identical to v1.img: "
            + ", ".join(f"{f} {'yes' if same[f] else 'NO'}" for f in self.formats) + ".")

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
    ap.add_argument("--image", help="use this image as v1 instead of generating one (--size is "
                    "then ignored; the sweep and delta sections, which need a v2, are refused)")
    ap.add_argument("--gen", default=DEFAULT_GEN, help="gen-vm-image.py (default: %(default)s)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, among {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the peers section; the median of each tool is reported (default: 1)")
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help="store formats the peers and assemble sections import into and read "
                    "from, comma-separated among files,packs; the first is the reference of the "
                    "speed column (default: %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="before each timed command, wait up to this many seconds for other jobs "
                    "to leave the CPUs idle (default: %(default)s)")
    ap.add_argument("--out", help="also write the markdown tables to this file")
    a = ap.parse_args()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose among {SECTIONS}")
    parse_size(a.size)
    if a.image and ("sweep" in only or "delta" in only):
        ap.error("--image gives no v2: choose --only among peers,assemble,rates")
    if a.image and not os.path.isfile(a.image):
        ap.error(f"--image {a.image}: no such file")
    bad = [f for f in a.formats.split(",") if f and f not in FORMATS]
    if bad or not a.formats.strip(","):
        ap.error(f"unknown store format(s) {bad}; choose among {FORMATS}")
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
    QUIET["max_wait"] = a.quiet_wait
    b = Bench(a, workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        b.setup(need_v2=("sweep" in only or "delta" in only))
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "unknown"
        source = f", {a.image}" if a.image else ", generated"
        header = (f"## nightcast-image benchmarks: {fmt_bytes(b.size)} image ({b.size:,} bytes"
                  f"{source})\n\n"
                  f"Run {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
                  f"tree {rev}, binary {a.bin} (sha256 {b.bin_sha}, copied before the first run); "
                  f"load average at start {open('/proc/loadavg').read().split()[0]}; "
                  f"sections: {', '.join(only)}.\n")
        b.out.append(header)
        print(header, flush=True)
        for section in SECTIONS:
            if section in only:
                getattr(b, section)()
        footer = ("\n*other CPU s*: CPU time the rest of the machine used while a command ran "
                  "(from /proc/stat, including kernel writeback of the command's own writes); well above "
                  "0 means another job competed for the 2 cores. Before each timed command the script "
                  f"waited for the machine to be quiet (< 0.2 core busy): {QUIET['waited']:.0f} s in all, "
                  f"gave up after {QUIET['max_wait']:.0f} s {QUIET['gave_up']} time(s).\n"
                  f"Load average at end: {open('/proc/loadavg').read().split()[0]}.\n")
        b.out.append(footer)
        print(footer, flush=True)
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
