#!/usr/bin/env python3
"""Memory figures of processes, for bench/agent.sh. Linux /proc only, no dependencies.

  procmem.py idle PID...
      one line per process: PID RSSANON_KIB VMRSS_KIB PSS_KIB NLIBS CPU_MS NAME, where NLIBS is the
      number of distinct shared object files (*.so, *.so.N) mapped, from /proc/PID/maps; PSS from
      /proc/PID/smaps_rollup; CPU_MS the user + system CPU time used since the process started.

  procmem.py peak OUT.json [--watch PID]... -- COMMAND...
      runs /usr/bin/time -f '%e %M' COMMAND and samples every 20 ms the status (RssAnon, VmRSS,
      RssFile + RssShmem, VmHWM) of COMMAND and all its descendants, and of each --watch PID (a daemon that does the
      work, like `rauc service`). Writes OUT.json: exit status, wall seconds and max RSS (KiB) from
      GNU time, and per process (pid, name) the peak sampled RssAnon, VmRSS and file-backed RSS
      (RssFile + RssShmem: mapped files, on tmpfs too) and the last VmHWM seen; plus the peak of the per-sample sums over COMMAND's processes.

  procmem.py smaps PID [N]
      where a process's anonymous memory is: KiB of Anonymous per mapping name, largest first
      (the N largest)."""
import json
import os
import re
import subprocess
import sys
import time

SO = re.compile(r"\.so(\.[0-9]+)*$")


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Name", "PPid"):
                    out[k] = v.strip()
                elif k in ("RssAnon", "RssFile", "RssShmem", "VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return out


def libs(pid):
    names = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                path = parts[5].strip()
                if path.startswith("/") and SO.search(os.path.basename(path)):
                    names.add(path)
    return names


def pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def idle(pids):
    for pid in pids:
        st = status(pid)
        if st is None or "RssAnon" not in st:
            raise SystemExit(f"process {pid} is gone")
        print(pid, st["RssAnon"], st["VmRSS"], pss(pid), len(libs(pid)), cpu_ms(pid), st["Name"])


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                ppid = int(s[s.rindex(")") + 2:].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    return kids


def descendants(root):
    kids = children_map()
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def peak(out_path, watch, cmd):
    tfile = out_path + ".time"
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%e %M", "-o", tfile] + cmd,
                            stdin=subprocess.DEVNULL)
    per = {}  # (pid, name) -> dict
    sum_anon = sum_rss = 0
    while True:
        done = proc.poll() is not None
        tree = descendants(proc.pid) if not done else []
        a = r = 0
        for pid in tree + watch:
            st = status(pid)
            if st is None or "RssAnon" not in st:
                continue  # gone, or a zombie
            key = f"{pid} {st['Name']}"
            e = per.setdefault(key, {"watched": pid in watch, "RssAnon": 0, "VmRSS": 0,
                                     "RssMapped": 0, "VmHWM": 0})
            e["RssAnon"] = max(e["RssAnon"], st["RssAnon"])
            e["RssMapped"] = max(e["RssMapped"], st["RssFile"] + st["RssShmem"])
            e["VmRSS"] = max(e["VmRSS"], st["VmRSS"])
            e["VmHWM"] = max(e["VmHWM"], st["VmHWM"])
            if pid not in watch:
                a += st["RssAnon"]
                r += st["VmRSS"]
        sum_anon, sum_rss = max(sum_anon, a), max(sum_rss, r)
        if done:
            break
        time.sleep(0.02)
    with open(tfile) as f:
        lines = f.read().split("\n")
    wall, maxrss = lines[-2].split() if len(lines) >= 2 else ("0", "0")  # last line: the figures
    res = {"rc": proc.returncode, "seconds": float(wall), "maxrss_kib": int(maxrss),
           "processes": per, "sum_rssanon_kib": sum_anon, "sum_rss_kib": sum_rss}
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def smaps(pid, limit):
    agg = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split(maxsplit=5)
                name = parts[5].strip() if len(parts) == 6 else "[anonymous mappings]"
            elif line.startswith("Anonymous:"):
                agg[name] = agg.get(name, 0) + int(line.split()[1])
    for n, kib in sorted(agg.items(), key=lambda x: -x[1])[:limit]:
        if kib:
            print(f"{kib:8d} KiB  {n}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "idle":
        idle([int(p) for p in sys.argv[2:]])
    elif len(sys.argv) >= 5 and sys.argv[1] == "peak" and "--" in sys.argv:
        sep = sys.argv.index("--")
        opts, cmd = sys.argv[3:sep], sys.argv[sep + 1:]
        watch = [int(opts[i + 1]) for i in range(len(opts)) if opts[i] == "--watch"]
        peak(sys.argv[2], watch, cmd)
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "smaps":
        smaps(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
