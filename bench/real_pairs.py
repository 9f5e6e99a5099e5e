#!/usr/bin/env python3
"""WAN bytes and import speed of nightcast against its peers on real Debian image pairs.

Builds real operating-system images and their next versions, as a DSI's update would make them, then
measures in one run what a site holding v1 must download to get v2, with each tool:

  images    v1: a Debian system installed by mmdebstrap into an ext4 file system (a bare ext4
            image, no partition table) of --size, mounted on a loop device; only the release's
            main archive (the point release as published, no security or -updates suite).
            v2 "install": a copy of v1, mounted, /proc /sys /dev bound, `apt-get install` of
            --packages inside it by chroot, `apt-get clean`, unmounted: an in-place change.
            v2 "upgrade": a copy of v1 upgraded in place (`apt-get full-upgrade`) against the
            release's -security and -updates suites: what a DSI's monthly update does.
  wan       per pair: nightcast (new chunk files, as stored after import, + the v2 manifest),
            the same chunks after `nightcast-image tighten` (zstd 19, what the controller sends),
            casync (store growth + the v2 .caibx), rsync of the raw image from v2 to a copy of v1
            with delta transfer and zstd compression (bytes on the wire both ways, from
            `rsync --stats`; with --rsync-extra also at zstd level 19 and without --inplace),
            whole-image zstd -3 and -19. tighten and zstd -19 are slow and only sizes matter:
            they run beside the timed commands (their CPU shows as "other CPU s") and are
            stopped if not done by --slow-deadline.
  import    v1 and v2 import wall time and peak RSS: `nightcast-image build` vs `casync make` vs
            `zstd -T0 -3` of the image.
  assemble  `nightcast-image assemble` of v2 vs `cp --sparse=always` (second of two runs).

rsync transport: rsync runs with `-e WORK/rsh-local`, a two-line shim that drops the host name
and runs the "remote" rsync locally through `sh -c` (as ssh would), so both ends are real rsync
processes talking the rsync protocol over a pipe: delta transfer (`--no-whole-file`, which rsync
turns off by default for local copies) and wire compression really apply, and `--stats` counts the
bytes that crossed the pipe. The receiver's copy of v1 is updated in place (`--inplace`), as a
site's disk would be, and compared with v2 afterwards.

Needs root (loop mounts, chroot), mmdebstrap, casync, rsync (>= 3.2, for zstd), zstd, GNU time,
network access to the Debian archive, and a release build: `cargo build --release -p image-tools`.
Reuses bench/run.py's timing helpers (quiet wait, GNU time peak RSS).

    python3 bench/real_pairs.py --workdir /var/tmp/pairs --keep
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as rb  # noqa: E402  (bench/run.py: run, tree_bytes, table, fmt_bytes, QUIET)

REPO = rb.REPO
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
TOOLS = {  # tool -> Debian package that provides it
    "mmdebstrap": "mmdebstrap", "casync": "casync", "rsync": "rsync", "zstd": "zstd",
    "mkfs.ext4": "e2fsprogs", "/usr/bin/time": "time",
}


def log(msg):
    rb.log(msg)


def sh(cmd, **kw):
    """Runs cmd (a list), untimed; fails loudly."""
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return r


class Mounted:
    """The ext4 image mounted on a loop device at `mnt`, with /proc /sys /dev bound for chroot."""

    def __init__(self, image, mnt, binds=True):
        self.image, self.mnt, self.binds, self.done = image, mnt, binds, []

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        sh(["mount", "-o", "loop", self.image, self.mnt])
        self.done.append(self.mnt)
        if self.binds:
            for d in ("proc", "sys", "dev"):
                target = os.path.join(self.mnt, d)
                os.makedirs(target, exist_ok=True)
                sh(["mount", "--bind", "/" + d, target])
                self.done.append(target)
        return self

    def chroot(self, *cmd):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
        sh(["chroot", self.mnt] + list(cmd), env=env, stdout=sys.stderr)

    def used_bytes(self):
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def __exit__(self, *exc):
        for target in reversed(self.done):
            subprocess.run(["umount", target])
        subprocess.run(["sync"])


class Pairs:
    def __init__(self, a, w):
        self.a, self.w = a, w
        self.bin = os.path.join(w, "nightcast-image")
        self.key = os.path.join(w, "key")
        self.out = []
        self.notes = {}  # image -> text on how it was made

    def p(self, name):
        return os.path.join(self.w, name)

    def add(self, block):
        """One markdown block of the report: printed now, written to --out by `write_out`."""
        self.out.append(block)
        print(block, flush=True)

    def emit(self, title, body, note=None):
        self.add(f"### {title}\n\n{body}\n" + (f"\n{note}\n" if note else ""))

    def write_out(self):
        if self.a.out:
            with open(self.a.out, "w") as f:
                f.write("\n".join(self.out))

    # ---- images ----
    def make_images(self):
        v1 = self.p("v1.img")
        mnt = self.p("mnt")
        if not os.path.exists(v1):
            tmp = v1 + ".part"
            if os.path.exists(tmp):
                os.remove(tmp)
            sh(["truncate", "-s", self.a.size, tmp])
            sh(["mkfs.ext4", "-q", "-L", "root", tmp])
            log(f"mmdebstrap {self.a.suite} into {tmp}")
            with Mounted(tmp, mnt, binds=False) as m:
                sh(["mmdebstrap", "--variant=important", "--components=main",
                    "--include=" + self.a.base_include, self.a.suite, m.mnt, MIRROR],
                   stdout=sys.stderr)
                used = m.used_bytes()
            os.rename(tmp, v1)
            with open(v1 + ".note", "w") as f:
                f.write(f"mmdebstrap --variant=important --include={self.a.base_include} "
                        f"{self.a.suite} (main only), {rb.fmt_bytes(used)} used")
        self.notes["v1"] = open(v1 + ".note").read()
        self.make_v2("install", self.install)
        self.make_v2("upgrade", self.upgrade)

    def make_v2(self, name, change):
        img = self.p(f"v2-{name}.img")
        if not os.path.exists(img):
            tmp = img + ".part"
            log(f"v2 {name}: copy v1, change it in place")
            sh(["cp", "--sparse=always", self.p("v1.img"), tmp])
            with Mounted(tmp, self.p("mnt")) as m:
                before = m.used_bytes()
                what = change(m)
                m.chroot("apt-get", "clean")
                after = m.used_bytes()
            os.rename(tmp, img)
            with open(img + ".note", "w") as f:
                f.write(f"{what}; file system use {rb.fmt_bytes(before)} -> {rb.fmt_bytes(after)}")
        self.notes[name] = open(img + ".note").read()

    def install(self, m):
        pk = self.a.packages.split()
        m.chroot("apt-get", "update")
        m.chroot("apt-get", "install", "-y", *pk)
        return f"`apt-get install {' '.join(pk)}` (with recommends) from {self.a.suite} main"

    def upgrade(self, m):
        s = self.a.suite
        with open(os.path.join(m.mnt, "etc/apt/sources.list.d/updates.list"), "w") as f:
            f.write(f"deb {MIRROR} {s}-updates main\ndeb {SECURITY} {s}-security main\n")
        m.chroot("apt-get", "update")
        listing = subprocess.run(["chroot", m.mnt, "apt", "list", "--upgradable"],
                                 capture_output=True, text=True).stdout
        n = sum(1 for line in listing.splitlines() if "upgradable from" in line)
        m.chroot("apt-get", "full-upgrade", "-y")
        return (f"`apt-get full-upgrade` against {s}-security and {s}-updates: {n} packages "
                f"upgraded (kernel included if listed)")

    # ---- measurements ----
    def build(self, store, image, manifest, version, kib=None):
        cmd = [self.bin, "build", "--store", store, "--key", self.key, "--name", "debian",
               "--version", version, "-o", manifest, "--json"]
        if kib:
            cmd += ["--avg-chunk-kib", str(kib)]
        return rb.run(cmd + [image])

    def chunk_files(self, store):
        root = os.path.join(store, "chunks")
        out = {}
        for d, _, names in os.walk(root):
            for n in names:
                out[n] = os.path.getsize(os.path.join(d, n))
        return out

    def pair(self, name):
        v1, v2 = self.p("v1.img"), self.p(f"v2-{name}.img")
        size = os.path.getsize(v2)
        res = {"name": name, "size": size}
        # nightcast: v1 then v2 into one store
        store = self.p(f"nc-{name}")
        shutil.rmtree(store, ignore_errors=True)
        # the size-only jobs (slow, untimed) start at once beside the timed commands; their
        # CPU shows in the timed commands' "other CPU s"
        res["bg"] = [("zs19", subprocess.Popen(
            ["zstd", "-q", "-f", f"-T{self.a.slow_threads}", "-19", v2, "-o", v2 + ".zst19"]))]
        log(f"{name}: nightcast build v1")
        res["nc_v1"] = self.build(store, v1, self.p(f"{name}-v1.m"), "v1")
        before = self.chunk_files(store)
        log(f"{name}: nightcast build v2")
        res["nc_v2"] = self.build(store, v2, self.p(f"{name}-v2.m"), "v2")
        rep = json.loads(res["nc_v2"].stdout)
        after = self.chunk_files(store)
        new = sorted(set(after) - set(before))
        res["nc_new_chunks"] = len(new)
        res["nc_new_bytes"] = sum(after[c] for c in new)
        res["nc_reported"] = rep["new_stored_bytes"]
        res["nc_manifest"] = os.path.getsize(self.p(f"{name}-v2.m"))
        # the new chunks alone, in a store of their own, for tighten (the v1 chunks need no pass
        # here: only what v2 adds crosses the WAN)
        only = self.p(f"nc-{name}-new")
        shutil.rmtree(only, ignore_errors=True)
        shutil.copytree(store, only, ignore=lambda d, names: [n for n in names if n in before])
        got = self.chunk_files(only)
        assert set(got) == set(new), "new-chunk store does not hold exactly the new chunks"
        res["nc_store"] = store
        res["nc_only"] = only
        res["bg"].append(("tighten", subprocess.Popen(
            [self.bin, "tighten", "--store", only, "--threads", str(self.a.slow_threads), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)))
        # casync
        cstore = self.p(f"ca-{name}.castr")
        shutil.rmtree(cstore, ignore_errors=True)
        log(f"{name}: casync make v1")
        res["ca_v1"] = rb.run(["casync", "make", "--store=" + cstore, self.p(f"{name}-v1.caibx"), v1])
        b = rb.tree_bytes(cstore)
        log(f"{name}: casync make v2")
        res["ca_v2"] = rb.run(["casync", "make", "--store=" + cstore, self.p(f"{name}-v2.caibx"), v2])
        a = rb.tree_bytes(cstore)
        res["ca_new_bytes"], res["ca_new_chunks"] = a[0] - b[0], a[1] - b[1]
        res["ca_index"] = os.path.getsize(self.p(f"{name}-v2.caibx"))
        shutil.rmtree(cstore)
        # zstd of the whole images (import speed on v1, bytes on v2)
        log(f"{name}: zstd -T0 -3 v1 and v2")
        res["zs_v1"] = rb.run(["zstd", "-q", "-f", "-T0", "-3", v1, "-o", self.p("z.tmp")])
        res["zs_v2"] = rb.run(["zstd", "-q", "-f", "-T0", "-3", v2, "-o", self.p("z.tmp")])
        res["zs3_bytes"] = os.path.getsize(self.p("z.tmp"))
        os.remove(self.p("z.tmp"))
        # rsync
        variants = [("rsync", None, True)]
        if self.a.rsync_extra:
            variants += [("rsync19", 19, True), ("rsync_tmp", None, False)]
        for key, level, inplace in variants:
            dst = self.p("rsync-dst.img")
            sh(["cp", "--sparse=always", v1, dst])
            cmd = ["rsync", "--no-whole-file", "--compress", "--compress-choice=zstd", "--stats"]
            if inplace:
                cmd.append("--inplace")
            if level is not None:
                cmd.append(f"--compress-level={level}")
            cmd += ["-e", self.rsh, v2, "localhost:" + dst]
            log(f"{name}: {' '.join(cmd[:7])}")
            r = rb.run(cmd)
            stats = {}
            for line in r.stdout.splitlines():
                k, _, v = line.partition(":")
                if v.strip():
                    stats[k.strip()] = v.strip().split()[0].replace(",", "")
            same = subprocess.run(["cmp", "-s", dst, v2]).returncode == 0
            os.remove(dst)
            res[key] = {"sent": int(stats["Total bytes sent"]),
                        "received": int(stats["Total bytes received"]),
                        "literal": int(stats["Literal data"]), "matched": int(stats["Matched data"]),
                        "secs": r.secs, "same": same}
        return res

    def slow_sizes(self, results):
        """Waits for each pair's tighten and zstd -19 (started by `pair`) until --deadline, reads
        their sizes; a job still running then is stopped and reported as not finished."""
        for res in results:
            for what, pr in res.pop("bg"):
                log(f"{res['name']}: waiting for {what}")
                try:
                    out, _ = pr.communicate(timeout=max(1.0, self.deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.communicate()
                    log(f"{res['name']}: {what} not finished by the deadline, stopped")
                    continue
                if pr.returncode != 0:
                    raise SystemExit(f"{what} failed for {res['name']}")
                if what == "tighten":
                    res["tighten"] = json.loads(out)
                    res["nc_tight_bytes"] = sum(self.chunk_files(res["nc_only"]).values())
                else:
                    path = self.p(f"v2-{res['name']}.img.zst19")
                    res["zs19_bytes"] = os.path.getsize(path)
                    os.remove(path)
            self.save(res)

    def save(self, res):
        with open(self.p(f"results-{res['name']}.json"), "w") as f:
            json.dump({k: v for k, v in res.items() if k != "bg"}, f,
                      default=lambda r: r.__dict__, indent=1)

    def assemble(self, res):
        name = res["name"]
        v2 = self.p(f"v2-{name}.img")
        out, copy = self.p("asm.img"), self.p("copy.img")
        runs = {"asm": [], "cp": []}
        for _ in range(2):
            for f in (out, copy):
                if os.path.exists(f):
                    os.remove(f)
            runs["asm"].append(rb.run([self.bin, "assemble", "--store", res["nc_store"], "--pubkey",
                                       self.key + ".pub", self.p(f"{name}-v2.m"), out]))
            runs["cp"].append(rb.run(["cp", "--sparse=always", v2, copy]))
        same = subprocess.run(["cmp", "-s", out, v2]).returncode == 0
        for f in (out, copy):
            os.remove(f)
        res["asm"], res["cp"], res["asm_same"] = runs["asm"], runs["cp"], same

    # ---- the one idea tried: a zstd dictionary per master family ----
    def raw_chunks(self, store, dest, every=1):
        """Writes the raw bytes of every `every`-th chunk of `store` into `dest`, one file each."""
        os.makedirs(dest, exist_ok=True)
        n = 0
        for i, (cid, path) in enumerate(sorted(
                (name, os.path.join(d, name))
                for d, _, names in os.walk(os.path.join(store, "chunks")) for name in names)):
            if i % every:
                continue
            with open(path, "rb") as f:
                stored = f.read()
            # stored form: encoding (1 byte: 0 raw, 1 zstd), raw length (4), payload
            raw = stored[5:] if stored[0] == 0 else subprocess.run(
                ["zstd", "-d", "-q", "-c"], input=stored[5:], capture_output=True, check=True).stdout
            assert len(raw) == int.from_bytes(stored[1:5], "little"), cid
            with open(os.path.join(dest, cid), "wb") as f:
                f.write(raw)
            n += 1
        return n

    def compressed_sum(self, src, level, dictionary=None):
        """Sum of the sizes of each file of `src` compressed on its own (zstd CLI, one frame each)."""
        out = src + ".z"
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        names = sorted(os.listdir(src))
        for i in range(0, len(names), 500):
            cmd = ["zstd", "-q", f"-{level}", "--no-check", "--output-dir-flat", out]
            if dictionary:
                cmd += ["-D", dictionary]
            sh(cmd + [os.path.join(src, n) for n in names[i:i + 500]])
        total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
        shutil.rmtree(out)
        return total

    def dictionary(self):
        rows = []
        for name in self.a.dict_pairs.split(","):
            store, only = self.p(f"nc-{name}"), self.p(f"nc-{name}-new")
            new_names = set(self.chunk_files(only))
            v1_store = self.p(f"dict-{name}-v1store")
            shutil.rmtree(v1_store, ignore_errors=True)
            shutil.copytree(store, v1_store, ignore=lambda d, names: [n for n in names
                                                                      if n in new_names])
            samples, new_raw = self.p(f"dict-{name}-samples"), self.p(f"dict-{name}-new")
            for d in (samples, new_raw):
                shutil.rmtree(d, ignore_errors=True)
            n_samples = self.raw_chunks(v1_store, samples, every=self.a.dict_every)
            n_new = self.raw_chunks(only, new_raw, every=self.a.dict_new_every)
            raw_bytes = sum(os.path.getsize(os.path.join(new_raw, f)) for f in os.listdir(new_raw))
            plain = self.compressed_sum(new_raw, 19)
            row = [name, f"{n_samples:,} of v1's chunks",
                   f"{n_new:,} of {len(new_names):,} ({raw_bytes:,} B raw)",
                   f"{plain:,}"]
            for size in self.a.dict_sizes:
                dic = self.p(f"dict-{name}-{size}")
                log(f"dictionary {name}: zstd --train --maxdict={size}")
                sh(["zstd", "-q", "-f", "--train", "-r", samples, f"--maxdict={size}", "-o", dic],
                   stdout=subprocess.DEVNULL)
                with_dict = self.compressed_sum(new_raw, 19, dic)
                dsize = os.path.getsize(dic)
                row += [f"{with_dict:,} + {dsize:,}",
                        f"**{(with_dict + dsize) / plain:.3f}** ({with_dict / plain:.3f})"]
            rows.append(row)
            for d in (samples, new_raw, v1_store):
                shutil.rmtree(d)
        heads = ["pair", "trained on", "v2's new chunks", "zstd -19 each, no dictionary (B)"]
        for size in self.a.dict_sizes:
            heads += [f"with a {size // 1024} KiB dictionary (B) + the dictionary",
                      "vs no dictionary (chunks only)"]
        self.emit("A zstd dictionary per master family (tried, not adopted)", rb.table(heads, rows),
                  "Every N-th new chunk of v2 (see the column) compressed on its own at zstd -19 (zstd CLI, `--no-check`), "
                  "without and with a dictionary trained (`zstd --train`) on v1's chunks; the "
                  "dictionary crosses the WAN once per family, so it is counted.")

    # ---- tables ----
    def report(self, results):
        for res in results:
            n = res["name"]
            nc = res["nc_new_bytes"] + res["nc_manifest"]
            nct = res.get("nc_tight_bytes", 0) + res["nc_manifest"]
            if "nc_tight_bytes" not in res:
                nct = float("nan")
            ca = res["ca_new_bytes"] + res["ca_index"]
            rs = res["rsync"]
            rsw = rs["sent"] + rs["received"]
            rows = [
                ["nightcast, tightened (zstd 19: what the WAN carries)",
                 f"{res['nc_tight_bytes']:,} ({res['nc_new_chunks']:,} chunks)"
                 if "nc_tight_bytes" in res else "not finished",
                 f"{res['nc_manifest']:,}", f"**{nct:,}**", f"{nct / rsw:.3f}"],
                ["nightcast, as imported (zstd 3)",
                 f"{res['nc_new_bytes']:,} ({res['nc_new_chunks']:,} chunks)",
                 f"{res['nc_manifest']:,}", f"{nc:,}", f"{nc / rsw:.3f}"],
                ["casync (store growth + .caibx)",
                 f"{res['ca_new_bytes']:,} ({res['ca_new_chunks']:,} chunks)",
                 f"{res['ca_index']:,}", f"{ca:,}", f"{ca / rsw:.3f}"],
                ["rsync --compress-choice=zstd (default level)",
                 f"{rs['sent']:,} sent", f"{rs['received']:,} received", f"{rsw:,}", "1.000"],
                ["whole v2, zstd -3", f"{res['zs3_bytes']:,}", "", f"{res['zs3_bytes']:,}",
                 f"{res['zs3_bytes'] / rsw:.3f}"],
                ["whole v2, zstd -19", "", "",
                 f"{res['zs19_bytes']:,}" if "zs19_bytes" in res else "not finished",
                 f"{res.get('zs19_bytes', float('nan')) / rsw:.3f}"],
            ]
            extra = ""
            for key, label in (("rsync19", "rsync --compress-choice=zstd --compress-level=19"),
                               ("rsync_tmp", "rsync --compress-choice=zstd without --inplace "
                                "(the receiver builds a new file)")):
                if key in res:
                    r = res[key]
                    w = r["sent"] + r["received"]
                    rows.insert(-2, [label, f"{r['sent']:,} sent", f"{r['received']:,} received",
                                     f"{w:,}", f"{w / rsw:.3f}"])
                    extra += (f" {label}: {r['secs']:.1f} s, literal {r['literal']:,} B, copy equal "
                              f"to v2: {'yes' if r['same'] else 'NO'}.")
            t = res.get("tighten", {"tightened": "?", "already": "?", "unchanged": "?"})
            self.emit(
                f"WAN bytes for v2, pair \"{n}\" ({rb.fmt_bytes(res['size'])} image)",
                rb.table(["tool", "data", "index / other direction", "total", "vs rsync+zstd"], rows),
                f"v2: {self.notes[n]}. nightcast's new chunk files after import sum to "
                f"{res['nc_new_bytes']:,} B (`build --json` new_stored_bytes: {res['nc_reported']:,}); "
                f"`tighten` recompressed {t['tightened']:,} of them, {t['already']:,} were final "
                f"already (kept raw), {t['unchanged']:,} did not shrink. rsync literal data "
                f"{rs['literal']:,} B, matched {rs['matched']:,} B; copy equal to v2 after rsync: "
                f"{'yes' if rs['same'] else 'NO'}. "
                f"nightcast tightened / casync: **{nct / ca:.3f}**; / rsync+zstd: **{nct / rsw:.3f}**; "
                f"zstd -3 of the whole v2 / nightcast tightened: {res['zs3_bytes'] / nct:.2f}." + extra)
            rows = []
            for label, k in (("v1 (fresh store)", "v1"), ("v2 (store holding v1)", "v2")):
                a, c, z = res[f"nc_{k}"], res[f"ca_{k}"], res[f"zs_{k}"]
                rows.append([label, f"{a.secs:.2f} ({a.cpu_secs:.1f})", f"{a.maxrss_kib / 1024:.1f}",
                             f"{c.secs:.2f} ({c.cpu_secs:.1f})", f"{c.maxrss_kib / 1024:.1f}",
                             f"{z.secs:.2f} ({z.cpu_secs:.1f})", f"{z.maxrss_kib / 1024:.1f}",
                             f"**{c.secs / a.secs:.2f}x**", f"**{z.secs / a.secs:.2f}x**",
                             f"{a.other_cpu_secs:.1f} / {c.other_cpu_secs:.1f} / {z.other_cpu_secs:.1f}"])
            asm, cp = res["asm"][1], res["cp"][1]
            self.emit(
                f"Import and assemble, pair \"{n}\"",
                rb.table(["import", "nightcast s (CPU s)", "RSS MiB", "casync make s (CPU s)",
                          "RSS MiB", "zstd -T0 -3 s (CPU s)", "RSS MiB", "nightcast speed / casync",
                          "nightcast speed / zstd", "other CPU s (nc / ca / zstd)"], rows),
                f"assemble v2: {asm.secs:.2f} s ({asm.maxrss_kib / 1024:.1f} MiB) vs "
                f"`cp --sparse=always` {cp.secs:.2f} s: cp time / assemble time **{cp.secs / asm.secs:.2f}** "
                f"(second of two runs; first {res['asm'][0].secs:.2f} vs {res['cp'][0].secs:.2f} s); "
                f"assembled image equal to v2: {'yes' if res['asm_same'] else 'NO'}. "
                f"rsync wall: {res['rsync']['secs']:.1f} s.")

    def load(self, name):
        """A pair's results as `save` wrote them (timings back as objects with attributes)."""
        with open(self.p(f"results-{name}.json")) as f:
            res = json.load(f)
        for k, v in res.items():
            if k[:3] in ("nc_", "ca_", "zs_") and isinstance(v, dict):
                res[k] = types.SimpleNamespace(**v)
            elif k in ("asm", "cp"):
                res[k] = [types.SimpleNamespace(**r) for r in v]
        return res

    def main(self):
        if self.a.report_only:
            for name in ("v1", "install", "upgrade"):
                img = self.p("v1.img" if name == "v1" else f"v2-{name}.img")
                self.notes[name] = open(img + ".note").read()
            results = [self.load(n) for n in ("install", "upgrade")
                       if os.path.exists(self.p(f"results-{n}.json"))]
            for res in results:
                zst = self.p(f"v2-{res['name']}.img.zst19")
                if "zs19_bytes" not in res and os.path.exists(zst):
                    # the run was stopped before it collected its zstd -19: check the stream
                    if subprocess.run(["zstd", "-q", "-t", zst]).returncode == 0:
                        res["zs19_bytes"] = os.path.getsize(zst)
                if "tighten" not in res:
                    # the run was stopped before it collected its tighten: finish the pass (what
                    # it tightened before stays tight) and read the sizes
                    r = subprocess.run([self.a.bin, "tighten", "--store", res["nc_only"], "--json"],
                                       capture_output=True, text=True, check=True)
                    res["tighten"] = json.loads(r.stdout)
                    res["tighten"]["note"] = "finished by --report-only"
                    res["nc_tight_bytes"] = sum(self.chunk_files(res["nc_only"]).values())
            self.report(results)
            self.write_out()
            return
        if self.a.dict_only:
            self.bin = self.a.bin
            self.dictionary()
            self.write_out()
            return
        if self.a.images_only:
            self.make_images()
            return
        shutil.copy2(self.a.bin, self.bin)
        self.rsh = self.p("rsh-local")
        with open(self.rsh, "w") as f:
            f.write("#!/bin/sh\n# rsync -e shim: drop the host name, run the command locally as "
                    "ssh would\nshift\nexec sh -c \"$*\"\n")
        os.chmod(self.rsh, 0o755)
        if not os.path.exists(self.key):
            sh([self.bin, "keygen", "--out", self.key])
        self.make_images()
        self.deadline = time.time() + self.a.slow_deadline
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        head = (f"## Real Debian image pairs: {rb.fmt_bytes(os.path.getsize(self.p('v1.img')))} ext4 "
                f"images\n\nRun {time.strftime('%Y-%m-%d %H:%M')} UTC on {os.cpu_count()} cores, tree "
                f"{rev}; load average at start {open('/proc/loadavg').read().split()[0]}. "
                f"v1: {self.notes['v1']}.\n")
        self.add(head)
        results = []
        for name in ("install", "upgrade"):
            res = self.pair(name)
            log(f"{name}: assemble vs cp")
            self.assemble(res)
            self.save(res)
            results.append(res)
        self.slow_sizes(results)
        self.report(results)
        tail = (f"\nBefore each timed command the script waited for the machine to be quiet: "
                f"{rb.QUIET['waited']:.0f} s in all, gave up {rb.QUIET['gave_up']} time(s) after "
                f"{rb.QUIET['max_wait']:.0f} s. Load average at end: "
                f"{open('/proc/loadavg').read().split()[0]}.\n")
        self.add(tail)
        self.write_out()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "nightcast-image"),
                    help="nightcast-image release binary (default: %(default)s)")
    ap.add_argument("--workdir", default="/var/tmp/nightcast-pairs",
                    help="work directory; images already there are reused (default: %(default)s)")
    ap.add_argument("--size", default="3G", help="ext4 image size (default: %(default)s)")
    ap.add_argument("--suite", default="trixie", help="Debian release (default: %(default)s)")
    ap.add_argument("--base-include", default="linux-image-amd64,systemd-sysv,openssh-server,"
                    "locales,sudo,less,curl,ca-certificates",
                    help="packages added to v1 (default: %(default)s)")
    ap.add_argument("--packages", default="vim-nox python3 git",
                    help="what the install pair installs (default: %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each timed command, wait up to this many seconds for other jobs "
                    "to leave the CPUs idle (default: %(default)s)")
    ap.add_argument("--rsync-extra", action="store_true",
                    help="also rsync at --compress-level=19 and without --inplace (slow: a "
                    "single-threaded zstd 19 over the literal data)")
    ap.add_argument("--slow-threads", type=int, default=2,
                    help="threads for each size-only job (tighten, zstd -19) (default: %(default)s)")
    ap.add_argument("--slow-deadline", type=float, default=4 * 3600,
                    help="seconds after the start by which the size-only jobs must be done; "
                    "later ones are stopped and reported as not finished (default: %(default)s)")
    ap.add_argument("--report-only", action="store_true",
                    help="only print the tables again from the results a previous run saved "
                    "(results-*.json in the work directory)")
    ap.add_argument("--images-only", action="store_true",
                    help="only build the images (v1 and both v2) into the work directory")
    ap.add_argument("--dict-only", action="store_true",
                    help="only the dictionary experiment, on the stores a previous run left in the "
                    "work directory")
    ap.add_argument("--dict-every", type=int, default=4,
                    help="train the dictionary on every N-th chunk of v1 (default: %(default)s)")
    ap.add_argument("--dict-new-every", type=int, default=2,
                    help="compress every N-th new chunk of v2 (default: %(default)s)")
    ap.add_argument("--dict-pairs", default="install,upgrade",
                    help="pairs to try the dictionary on (default: %(default)s)")
    ap.add_argument("--dict-sizes", type=lambda t: [int(x) for x in t.split(",")],
                    default=[112640, 1 << 20],
                    help="dictionary sizes in bytes, comma-separated (default: 112640,1048576)")
    ap.add_argument("--out", help="also write the markdown tables to this file")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the images are mounted on loop devices and changed by chroot")
    missing = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"missing tools: apt-get install {' '.join(sorted(set(missing)))}")
    if not (a.images_only or a.report_only) and not os.access(a.bin, os.X_OK):
        raise SystemExit(f"{a.bin} not found: cargo build --release -p image-tools")
    rb.QUIET["max_wait"] = a.quiet_wait
    os.makedirs(a.workdir, exist_ok=True)
    Pairs(a, a.workdir).main()


if __name__ == "__main__":
    main()
