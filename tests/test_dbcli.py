"""`loadtester db ...` through click's CliRunner on a group of our own, plus one real process."""
from __future__ import annotations

import json
import pathlib
import struct
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from loadtester import store
from loadtester.cli import db as dbcli
from loadtester.model import RECORD_FORMAT
from loadtester.units import parse_duration_s
from loadtester.store import RunWriter

REPO = pathlib.Path(__file__).resolve().parent.parent
REC = struct.Struct(RECORD_FORMAT)


@click.group()
def cli():
    """A stand-in for loadtester.cli's top-level group."""


dbcli.register(cli)


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def make_db(path, runs=2, rows=500, started_at=None):
    ids = []
    for i in range(runs):
        writer = RunWriter(path)
        row = {"url": "http://127.0.0.1/", "mode": "closed", "label": f"run {i}"}
        if started_at:
            row["started_at"] = started_at
        run_id, _ = writer.begin(row)
        writer.submit_records(b"".join(REC.pack(j * 10, 900 + j, 0, 64, 200, 0, 0) for j in range(rows)))
        writer.finish({"total_requests": rows})
        ids.append(run_id)
    return ids


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadtester: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_backup_restore_check_stats_prune(tmp_path):
    db = tmp_path / "loadtest.db"
    make_db(db)
    dest = tmp_path / "backups" / "b1.db"
    dest.parent.mkdir()                                # backup refuses a missing directory

    result = run("db", "backup", str(dest), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert f"to {dest}" in result.stdout and " in " in result.stdout and "KiB" in result.stdout
    assert dest.exists()

    result = run("db", "check", "--db", str(dest))
    assert result.exit_code == 0 and result.stdout.strip() == f"{dest}: ok"

    result = run("db", "stats", "--db", str(db), "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["runs"] == 2 and info["request_rows"] == 1000 and info["bytes_per_request_row"] > 0

    result = run("db", "stats", "--db", str(db))
    assert result.exit_code == 0
    assert "request rows   1,000" in result.stdout and "runs           2 (0 running)" in result.stdout

    make_db(db, runs=1)                                # a third run, not in the backup
    result = run("db", "restore", str(dest), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "previous database is kept as" in result.stdout
    assert store.stats(db)["runs"] == 2
    assert len(list(tmp_path.glob("loadtest.db.bak-*"))) == 1

    result = run("db", "prune", "--older-than", "30d", "--db", str(db))
    assert result.exit_code == 0 and "pruned 0 run(s)" in result.stdout
    result = run("db", "prune", "--older-than", "0s", "--vacuum", "--yes", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "pruned 2 run(s), 1,000 request rows" in result.stdout and "vacuumed" in result.stdout
    assert store.stats(db)["runs"] == 0


def test_prune_ages(tmp_path):
    db = tmp_path / "ages.db"
    make_db(db, runs=1, started_at="2020-01-01T00:00:00.000Z")
    make_db(db, runs=1)
    for age in ("12h", "90m", "2w"):
        assert run("db", "prune", "--older-than", age, "--db", str(db)).exit_code == 0
    assert run("db", "prune", "--older-than", "45s", "--yes", "--db", str(db)).exit_code == 0
    assert store.stats(db)["runs"] == 1
    assert parse_duration_s("30d") == 30 * 86400 and parse_duration_s("1.5h") == 5400


@pytest.mark.parametrize("age", ["soon", "30", "-1d", "30 days", "d", ""])
def test_prune_rejects_bad_ages_with_usage_error(tmp_path, age):
    db = tmp_path / "x.db"
    make_db(db, runs=1)
    result = run("db", "prune", "--older-than", age, "--db", str(db))
    assert result.exit_code == 2
    assert "not an age" in result.stderr and "Traceback" not in result.output
    assert store.stats(db)["runs"] == 1


def test_prune_requires_older_than(tmp_path):
    result = run("db", "prune", "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2 and "--older-than" in result.stderr


def test_db_path_falls_back_to_env_then_default(tmp_path, monkeypatch):
    env_db = tmp_path / "env.db"
    make_db(env_db, runs=1)
    result = run("db", "stats", "--json", env={"DB_PATH": str(env_db)})
    assert result.exit_code == 0 and json.loads(result.stdout)["path"] == str(env_db)

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DB_PATH", raising=False)
    result = run("db", "stats")
    assert_one_line_error(result, "no database at data/loadtest.db")
    make_db(tmp_path / "data" / "loadtest.db", runs=1)
    result = run("db", "stats", "--json", env={"DB_PATH": ""})
    assert result.exit_code == 0 and json.loads(result.stdout)["path"] == "data/loadtest.db"


def test_errors_are_one_line_with_exit_status_1(tmp_path):
    db = tmp_path / "loadtest.db"
    make_db(db, runs=1)
    text = tmp_path / "notes.txt"
    text.write_text("just text\n")

    assert_one_line_error(run("db", "backup", str(db), "--db", str(db)), "is the database itself")
    assert_one_line_error(run("db", "backup", str(text), "--db", str(db)), "refusing to overwrite")
    assert_one_line_error(run("db", "restore", str(tmp_path / "missing.db"), "--db", str(db)), "no backup at")
    assert_one_line_error(run("db", "restore", str(text), "--db", str(db)), "not an SQLite file")
    assert_one_line_error(run("db", "stats", "--db", str(text)), "not a loadtester database")
    assert_one_line_error(run("db", "check", "--db", str(text)), "not a loadtester database")
    assert_one_line_error(run("db", "prune", "--older-than", "1d", "--db", str(tmp_path / "none.db")),
                          "no database at")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(run("db", "backup", str(afile / "b.db"), "--db", str(db)), "not a directory")
    assert text.read_text() == "just text\n"


def test_check_fails_with_exit_status_1_on_damage(tmp_path):
    db = tmp_path / "damaged.db"
    make_db(db, runs=1, rows=20_000)
    size = db.stat().st_size
    with open(db, "r+b") as f:                         # garbage over the middle of the file
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    result = run("db", "check", "--db", str(db))
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines and all(line.startswith(f"{db}: ") and not line.endswith(": ok") for line in lines)
    assert "Traceback" not in result.output


def test_a_real_process_prints_loadtester_prefix(tmp_path):
    """No tracebacks from a real interpreter either (click's standalone mode)."""
    code = ("import click, sys\n"
            "from loadtester.cli import db as dbcli\n"
            "@click.group()\n"
            "def cli(): pass\n"
            "dbcli.register(cli)\n"
            "cli(prog_name='loadtester')\n")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00" * 4096)
    proc = subprocess.run([sys.executable, "-c", code, "db", "check", "--db", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"loadtester: {bad} is not a loadtester database (not an SQLite file)"
    proc = subprocess.run([sys.executable, "-c", code, "db", "prune", "--older-than", "soon", "--db", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
