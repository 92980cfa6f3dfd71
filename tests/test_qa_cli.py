"""What a new user trips on (the QA pass over realistic traffic, reports and HTTPS): each test is
one problem found, against real servers on 127.0.0.1 and a real SQLite file."""
from conftest import cli, self_signed_cert

from loadtester import store


def one_line_error(result, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_unwritable_sslkeylogfile_is_refused_before_the_run(start_target, db, tmp_path):
    # Before: the worker died opening it, a "failed" run was stored, nothing said why on stderr.
    cert, key = self_signed_cert(tmp_path)
    target = start_target("--tls-cert", cert, "--tls-key", key)
    for path in (tmp_path / "no-such-dir" / "keys.log", tmp_path):
        result = cli("blast", target.url, "--insecure", "-n", "5", "-c", "1", "--db", db,
                     env={"SSLKEYLOGFILE": str(path)})
        message = one_line_error(result)
        assert "SSLKEYLOGFILE" in message and str(path) in message, message
    assert target.stats()["served"] == 0
    assert not db.exists() or not store.list_runs(store.open_database(db))
    # a writable one still gets the secrets
    keys = tmp_path / "keys.log"
    result = cli("blast", target.url, "--insecure", "-n", "5", "-c", "1", "--db", db,
                 env={"SSLKEYLOGFILE": str(keys)})
    assert result.returncode == 0, result.stderr
    assert "CLIENT_TRAFFIC_SECRET_0" in keys.read_text()


def test_a_bad_think_time_is_named_as_typed(db):
    # Before: '-5ms' and '1s-' said "invalid think time ''", naming nothing the user typed.
    for typed in ("-5ms", "1s-", "-1ms-5ms", "abc"):
        message = one_line_error(cli("blast", "http://127.0.0.1:9/", f"--think={typed}",
                                     "-n", "1", "--db", db))
        assert f"invalid think time {typed!r}" in message, message
