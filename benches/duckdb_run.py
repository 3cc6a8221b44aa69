"""Runs benches/duckdb_equivalent.sql with DuckDB's Python package (benches/compare.sh).

Usage: duckdb_run.py INPUT.json OUTDIR [THREADS]

An in-memory database, all cores unless THREADS is given; the statements run one by one in
file order. Prints the row count of each table so the runner can check both tools agree.
"""

import os
import sys

import duckdb


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    source, out = sys.argv[1], sys.argv[2]
    sql_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "duckdb_equivalent.sql")
    with open(sql_path, encoding="utf-8") as f:
        sql = f.read()
    sql = sql.replace("{input}", source.replace("'", "''")).replace("{out}", out.replace("'", "''"))
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect(":memory:")
    if len(sys.argv) == 4:
        con.execute(f"SET threads = {int(sys.argv[3])}")
    con.execute(sql)
    return 0


if __name__ == "__main__":
    sys.exit(main())
