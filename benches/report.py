"""Summarises the runs of benches/compare.sh: a table on stdout and benches/results.md.

Usage: report.py RUNS.tsv META.txt RESULTS.md

RUNS.tsv has one line per run: tool, run, input bytes, wall seconds, peak RSS KiB, CPU
seconds, % of one core that other processes used during the run, status. META.txt has `key<TAB>value` lines
(machine, command, notes, checks). MB/s is input bytes / 10^6 / the median wall time of the
tool's successful runs; peak RSS is the largest of its runs, in MiB. Only the standard library
is used, so the system Python runs it.

A target that compares two tools is judged on paired ratios: in each round the tools run
one after the other, seconds apart, so the ratio of their throughputs in that round is taken
on the same machine speed, and the verdict uses the median of those per-round ratios. On a
shared VM whose speed drifts by a third over minutes (seen on the 2-core benchmark machine),
that is steadier than dividing one tool's median by the other's, which the table also shows.
"""

import statistics
import sys

LABELS = {
    "duckdb": "DuckDB (read_json + COPY, 3 tables x CSV + zstd Parquet)",
    "zephr": "zephr-etl convert (3 tables x CSV + zstd Parquet)",
    "zephr-t1": "zephr-etl convert --threads 1",
    "zephr-t2": "zephr-etl convert --threads 2",
    "serde-stream": "serde_json parse-only, 1 thread, from_reader (stream)",
    "serde-slice": "serde_json parse-only, 1 thread, from_slice (in memory)",
    "fetch": "zephr-etl fetch from mock server on 127.0.0.1",
    "zephr-4x": "zephr-etl convert, 4x input",
}


def load_runs(path):
    tools = {}
    for line in open(path, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 8:
            continue
        tool, run, size, wall, rss, cpu, busy, status = parts
        entry = tools.setdefault(tool, {"bytes": int(size), "wall": [], "rss": [], "cpu": [], "busy": [], "failed": 0,
                                        "by_run": {}})
        if status != "ok":
            entry["failed"] += 1
            continue
        entry["by_run"][run] = int(size) / 1e6 / float(wall)
        entry["wall"].append(float(wall))
        entry["rss"].append(int(rss) / 1024)
        entry["cpu"].append(float(cpu))
        entry["busy"].append(float(busy))
    return tools


def load_meta(path):
    meta, notes, checks = {}, [], []
    for line in open(path, encoding="utf-8"):
        key, _, value = line.rstrip("\n").partition("\t")
        if key == "note":
            notes.append(value)
        elif key == "check":
            checks.append(value)
        else:
            meta[key] = value
    return meta, notes, checks


def summarise(tools):
    rows = {}
    for tool, e in tools.items():
        if not e["wall"]:
            rows[tool] = None
            continue
        median = statistics.median(e["wall"])
        rows[tool] = {
            "mbps": e["bytes"] / 1e6 / median,
            "median": median,
            "min": min(e["wall"]),
            "max": max(e["wall"]),
            "cpu": statistics.median(e["cpu"]),
            "rss": max(e["rss"]),
            "runs": len(e["wall"]),
            "failed": e["failed"],
            "busy": max(e["busy"]),
            "by_run": e["by_run"],
        }
    return rows


def targets(rows, nproc):
    """(target, figure, verdict) for each target of issue 4."""
    out = []

    def ratio(a, b):
        """The median of the per-round throughput ratios of a to b, and their text."""
        if not (rows.get(a) and rows.get(b)):
            return None, "n/a"
        pairs = [rows[a]["by_run"][k] / rows[b]["by_run"][k] for k in rows[a]["by_run"] if k in rows[b]["by_run"]]
        if not pairs:
            return None, "n/a"
        r = statistics.median(pairs)
        of_medians = rows[a]["mbps"] / rows[b]["mbps"]
        return r, f"{r:.2f} (rounds {min(pairs):.2f}-{max(pairs):.2f}; of medians {of_medians:.2f})"

    def verdict(ok):
        return "SKIP" if ok is None else ("PASS" if ok else "FAIL")

    r, text = ratio("zephr", "duckdb")
    out.append(("throughput >= 10x DuckDB", text, verdict(None if r is None else r >= 10)))
    for base, name in (("serde-slice", "from_slice"), ("serde-stream", "from_reader")):
        r, text = ratio("zephr", base)
        out.append((f">= 1/3 of serde_json parse-only ({name})", text, verdict(None if r is None else r >= 1 / 3)))
    z = rows.get("zephr")
    out.append(("peak RSS <= 128 MiB", f"{z['rss']:.1f} MiB" if z else "n/a", verdict(None if not z else z["rss"] <= 128)))
    z4 = rows.get("zephr-4x")
    if z and z4:
        r = z4["rss"] / z["rss"]
        out.append(("RSS at 4x input <= 1.15x", f"{z4['rss']:.1f} / {z['rss']:.1f} MiB = {r:.2f}x", verdict(r <= 1.15)))
    else:
        out.append(("RSS at 4x input <= 1.15x", "not run (SCALE4=1)", "SKIP"))
    two = "zephr-t2" if rows.get("zephr-t2") else "zephr"
    r, text = ratio(two, "zephr-t1")
    label = "2 threads / 1 thread >= 1.7" + ("" if two == "zephr-t2" else f" (default = {nproc} threads)")
    out.append((label, text, verdict(None if r is None else r >= 1.7)))
    r, text = ratio("fetch", "zephr")
    out.append(("fetch / convert >= 0.8", text if r else "skipped", verdict(None if r is None else r >= 0.8)))
    return out


def main():
    runs_path, meta_path, md_path = sys.argv[1:4]
    rows = summarise(load_runs(runs_path))
    meta, notes, checks = load_meta(meta_path)
    order = [t for t in LABELS if t in rows] + [t for t in rows if t not in LABELS]
    table = []
    for tool in order:
        row = rows[tool]
        label = LABELS.get(tool, tool)
        if row is None:
            table.append((label, "failed", "", "", "", "", "", ""))
            continue
        table.append((
            label,
            f"{row['mbps']:.1f}",
            f"{row['median']:.2f}",
            f"{row['min']:.2f}-{row['max']:.2f}",
            f"{row['cpu']:.2f}",
            f"{row['rss']:.1f}",
            f"{row['busy']:.0f}",
            f"{row['runs']}" + (f" (+{row['failed']} failed)" if row["failed"] else ""),
        ))
    head = ("tool", "MB/s", "median s", "min-max s", "CPU s", "peak RSS MiB", "others' CPU %", "runs")
    checks_rows = targets(rows, meta.get("nproc", "?"))
    machine = f"{meta.get('cpu', '?')}, {meta.get('nproc', '?')} cores, {meta.get('memory', '?')} RAM, {meta.get('kernel', '?')}"
    input_line = f"{meta.get('input', '?')}: {int(meta.get('input_bytes', 0)) / 1e6:.1f} MB, {meta.get('users', '?')} users"
    if "input4" in meta:
        input_line += f"; 4x: {int(meta['input4_bytes']) / 1e6:.1f} MB"
    # % of one core that other processes used during a kept run.
    busiest = max((r["busy"] for r in rows.values() if r), default=0.0)
    busy_note = (f"other processes used up to {busiest:.0f}% of one core during a kept run "
                 f"({meta.get('nproc', '?')} cores = {100 * int(meta.get('nproc', '1'))}%); "
                 "such runs are slower than on a quiet machine" if busiest > 30 else None)

    # Plain text for the terminal.
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    print()
    print(f"machine: {machine}")
    print(f"command: {meta.get('command', '?')}   date: {meta.get('date', '?')}")
    print(f"input:   {input_line}")
    print(f"tools:   {meta.get('zephr', '?')}, DuckDB {meta.get('duckdb', '?')}, {meta.get('rustc', '?')}")
    print()
    for r in [head] + table:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    tw = max(len(t[0]) for t in checks_rows)
    fw = max(len(t[1]) for t in checks_rows)
    for name, figure, v in checks_rows:
        print(f"{v:4}  {name.ljust(tw)}  {figure.rjust(fw)}")
    for c in checks:
        print(f"check: {c}")
    for n in notes:
        print(f"note:  {n}")
    if busy_note:
        print(f"WARNING: {busy_note}")

    # Markdown for the README.
    md = []
    md.append(f"Measured {meta.get('date', '?')} with `{meta.get('command', '?')}`  ")
    md.append(f"Machine: {machine}  ")
    md.append(f"Input: {input_line}  ")
    md.append(f"Tools: {meta.get('zephr', '?')}, DuckDB {meta.get('duckdb', '?')} (Python), {meta.get('rustc', '?')}")
    md.append("")
    md.append("| " + " | ".join(head) + " |")
    md.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in table:
        md.append("| " + " | ".join(str(c) for c in r) + " |")
    md.append("")
    md.append("| target (issue 4) | figure | verdict |")
    md.append("|---|---:|---|")
    for name, figure, v in checks_rows:
        md.append(f"| {name} | {figure} | {v} |")
    md.append("")
    for c in checks:
        md.append(f"- check: {c}")
    for n in notes:
        md.append(f"- note: {n}")
    if busy_note:
        md.append(f"- warning: {busy_note}")
    md.append("")
    md.append("Ratios = the median of the per-round ratios of throughput (the tools of a round run "
              "seconds apart), with the range over rounds and the ratio of the two medians. "
              "MB/s = input bytes / 10^6 / median wall time; CPU s = median user + system time; "
              "peak RSS = largest maximum resident set of the runs (GNU time `%M`); others' CPU % = "
              "the most CPU that other processes used during a kept run, in % of one core "
              "(a disturbed run is repeated, up to 3 attempts, and the least disturbed kept).")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print(f"\nwritten: {md_path}")


if __name__ == "__main__":
    main()
