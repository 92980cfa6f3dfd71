"""Container files without a Docker engine: the entrypoint run as a plain process (a directory
standing in for the volume, new processes standing in for container starts), and a lint of
Dockerfile, docker-compose.yml, the Kubernetes manifests and the README's Persistence section.
The real image is built and run in tests/test_container.py (buildah); the files are checked
against their official schemas and linters in tests/test_deploy_schemas.py."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import signal
import subprocess

import apsw
import pytest
import yaml

from conftest import ROOT, children_of, free_port, is_alive, kill_if_alive, wait_for
from loadtester import store

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
VENV_BIN = ROOT / ".venv" / "bin"
DATA_DIR = "/home/pipeops/app/data"
APP_DIR = "/home/pipeops/app"
CONTAINER_DB_PATH = f"{DATA_DIR}/loadtest.db"


# --------------------------------------------------------------------------- the entrypoint

def container_env(db_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DB_PATH"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["DB_PATH"] = str(db_path)
    return env


def container(db_path, *command, cwd, timeout=60):
    """One 'container start': the entrypoint running COMMAND, as a new process."""
    return subprocess.run([str(ENTRYPOINT), *map(str, command)], env=container_env(db_path), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def container_runs(db_path, cwd) -> list[dict]:
    result = container(db_path, "loadtester", "runs", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def _running_with_rows(db_path) -> bool:
    try:
        with contextlib.closing(store.open_database(db_path, readonly=True)) as conn:
            row = conn.execute("SELECT id FROM test_runs WHERE status = 'running'").fetchone()
            return row is not None and conn.execute(
                "SELECT count(*) FROM request_batches WHERE test_run_id = ?", (row[0],)).get > 0
    except (store.StoreError, apsw.Error):
        return False


def test_entrypoint_creates_and_migrates_the_database(tmp_path):
    db_path = tmp_path / "volume" / "loadtest.db"
    assert os.access(ENTRYPOINT, os.X_OK), "deploy/entrypoint.sh must be executable (COPY keeps the mode)"
    assert container_runs(db_path, cwd=tmp_path) == []
    assert db_path.is_file()
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.pragma("user_version") == store.SCHEMA_VERSION
        assert conn.pragma("application_id") & 0xFFFFFFFF == store.APPLICATION_ID
        tables = {name for name, in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert {"test_runs", "metric_windows", "request_records", "request_batches"} <= tables
    finally:
        conn.close()
    assert not (tmp_path / "data").exists(), "DB_PATH was ignored"

    # The image's default command (the web app) starts on that volume, and its
    # HEALTHCHECK passes once it answers; before that it fails.
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    (health,) = [args for kw, args in instructions if kw == "HEALTHCHECK"][-1:]
    health_command = _exec_form(health.split("CMD", 1)[1])
    (cmd,) = [args for kw, args in instructions if kw == "CMD"][-1:]
    env = container_env(db_path)
    env["PORT"] = str(free_port())
    env["HOME"] = str(tmp_path)
    assert subprocess.run(health_command, env=env, cwd=tmp_path, capture_output=True,
                          timeout=60).returncode != 0
    server = subprocess.Popen([str(ENTRYPOINT), *_exec_form(cmd)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def healthy():
            return subprocess.run(health_command, env=env, cwd=tmp_path, capture_output=True,
                                  timeout=60).returncode == 0
        assert wait_for(healthy, timeout_s=20, interval_s=0.3), "serve never became healthy"
    finally:
        server.terminate()
        server.wait(20)


def test_runs_survive_container_restarts_and_killed_runs_become_interrupted(start_target, tmp_path):
    target = start_target()
    volume = tmp_path / "volume"
    db_path = volume / "loadtest.db"

    # Start 1: one blast, stored on the 'volume'.
    first = container(db_path, "loadtester", "blast", target.url, "-n", "2000", "-c", "10",
                      "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2,000 completed" in first.stdout

    # Start 2, a new process on the same directory: the run is there.
    runs = container_runs(db_path, cwd=tmp_path)
    assert [(r["status"], r["total_requests"], r["url"]) for r in runs] == [("completed", 2000, target.url)]

    # Start 3 is killed (kill -9, as a container is) in the middle of a 20 s blast.
    proc = subprocess.Popen([str(ENTRYPOINT), "loadtester", "blast", target.url, "-d", "20s", "-c", "10",
                             "--no-progress"], env=container_env(db_path), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        assert wait_for(lambda: _running_with_rows(db_path), timeout_s=15, interval_s=0.1)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"blast" in f.read(), "the entrypoint should exec the command"
        workers = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: not any(is_alive(p) for p in workers), timeout_s=2.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        kill_if_alive(workers)

    # Start 4: the entrypoint's open marks the dead run 'interrupted' before the command runs.
    runs = container_runs(db_path, cwd=tmp_path)
    assert [r["status"] for r in runs] == ["interrupted", "completed"]
    assert runs[0]["total_requests"] and runs[0]["total_requests"] > 0
    check = container(db_path, "loadtester", "db", "check", cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == f"{db_path}: ok", check.stdout + check.stderr


def test_entrypoint_refuses_a_data_dir_it_cannot_use(tmp_path):
    not_a_dir = tmp_path / "volume"
    not_a_dir.write_text("a regular file where the volume should be\n")
    result = container(not_a_dir / "loadtest.db", "loadtester", "runs", "--json", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadtester:"), result.stderr
    assert "Traceback" not in result.stderr
    assert not_a_dir.read_text() == "a regular file where the volume should be\n"


# --------------------------------------------------------------------------- docker-compose / k8s

def test_compose_declares_the_named_volume_and_port():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    service = compose["services"]["load-tester"]
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
    assert f"load-tester-data:{DATA_DIR}" in volumes
    assert "load-tester-data" in compose["volumes"]
    ports = [str(p) if not isinstance(p, dict) else str(p.get("target")) for p in service["ports"]]
    assert any(p.split(":")[-1].split("/")[0] == "8080" for p in ports), ports
    assert service.get("environment", {}).get("DB_PATH", CONTAINER_DB_PATH) == CONTAINER_DB_PATH
    build = service["build"]
    assert (ROOT / "deploy" / build["context"] / build.get("dockerfile", "Dockerfile")).resolve().is_file()


def _k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_pvc_and_single_replica_deployment():
    docs = _k8s_documents()
    pvcs = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(pvcs) == 1 and len(deployments) == 1

    pvc = pvcs[0]
    assert pvc["metadata"]["name"] == "load-tester-pvc"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"

    spec = deployments[0]["spec"]
    assert spec["replicas"] == 1                       # SQLite has one writer
    assert spec["strategy"]["type"] == "Recreate"      # the old pod lets go of the RWO volume first
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert "load-tester-pvc" in claims.values()
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert any(mounts.get(name) == DATA_DIR for name, claim in claims.items() if claim == "load-tester-pvc")
    run_as = container.get("securityContext", {}).get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
    assert run_as == 1000
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("DB_PATH", CONTAINER_DB_PATH) == CONTAINER_DB_PATH


# --------------------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with backslash continuations joined and comments dropped."""
    out, pending = [], None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith("#") or (pending is None and not stripped):
            continue                                  # comments (also inside continuations)
        if line.endswith("\\"):
            pending = (pending or "") + line[:-1] + " "
            continue
        full = ((pending or "") + line).strip()
        pending = None
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    assert pending is None, "Dockerfile ends inside a continuation"
    return out


def _exec_form(args: str) -> list[str]:
    args = args.strip()
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _env_pairs(args: str) -> dict:
    words = shlex.split(args)
    if words and "=" not in words[0]:                 # legacy form: ENV KEY value...
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def _copy_parts(args: str) -> tuple[dict, list[str], str]:
    words = _exec_form(args)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words[:-1], words[-1]


@pytest.fixture(scope="module")
def final_stage():
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    assert starts, "no FROM"
    return instructions, instructions[starts[-1]:]


def test_dockerfile_runs_as_uid_1000_with_the_data_volume(final_stage):
    _, stage = final_stage
    keywords = [kw for kw, _ in stage]
    last_run = max(i for i, kw in enumerate(keywords) if kw == "RUN")
    users = [(i, args) for i, (kw, args) in enumerate(stage) if kw == "USER"]
    assert users, "no USER"
    last_user_at, last_user = users[-1]
    assert last_user in ("1000", "1000:1000") and last_user_at > last_run, stage
    assert any(kw == "RUN" and re.search(r"useradd\b.*(--uid|-u)[ =]1000\b", args) for kw, args in stage)

    workdirs = [args for kw, args in stage if kw == "WORKDIR"]
    assert workdirs and workdirs[-1] == APP_DIR
    assert any(kw == "EXPOSE" and "8080" in args.replace("/tcp", "").split() for kw, args in stage)
    healthchecks = [args for kw, args in stage if kw == "HEALTHCHECK"]
    assert healthchecks and healthchecks[-1].split()[0].upper() != "NONE"
    commands = [_exec_form(args) for kw, args in stage if kw == "CMD"]
    assert commands and commands[-1][:2] == ["loadtester", "serve"]   # the web app on 8080
    env = {}
    for kw, args in stage:
        if kw == "ENV":
            env.update(_env_pairs(args))
    assert env.get("DB_PATH") == CONTAINER_DB_PATH
    volumes = [v for kw, args in stage if kw == "VOLUME" for v in _exec_form(args)]
    assert DATA_DIR in volumes


def test_dockerfile_entrypoint_is_the_repo_script_and_copy_sources_exist(final_stage):
    instructions, stage = final_stage
    for kw, args in instructions:
        if kw != "COPY":
            continue
        flags, sources, _dest = _copy_parts(args)
        if "from" in flags:
            continue                                  # from another build stage
        for source in sources:
            assert glob.glob(str(ROOT / source)), f"COPY source {source} is not in the repository"

    entrypoints = [_exec_form(args) for kw, args in stage if kw == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    program = entrypoints[-1][0]
    installed = []
    for kw, args in stage:
        if kw == "COPY":
            flags, sources, dest = _copy_parts(args)
            if "from" not in flags and "deploy/entrypoint.sh" in sources:
                installed.append(dest.rstrip("/") + "/entrypoint.sh" if dest.endswith("/") else dest)
    assert installed, "deploy/entrypoint.sh is not copied into the image"
    assert program in installed or any(os.path.basename(d) == program and
                                       os.path.dirname(d) in ("/usr/local/bin", "/usr/bin", "/bin")
                                       for d in installed), (program, installed)


# --------------------------------------------------------------------------- README

def test_readme_persistence_section_covers_operations():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Persistence")
    end = text.find("\n## ", start + 1)
    section = (text[start:end] if end != -1 else text[start:]).lower()
    for phrase in ("docker volume create", "bind mount", "docker cp", "kubectl cp", "db backup",
                   "db restore", "du -sh", "pvc", "replicas: 1", "security"):
        assert phrase in section, phrase
    # deleting the data: `docker compose [-f FILE] down -v` or `docker volume rm`
    assert re.search(r"docker compose\b[^\n]*\bdown -v\b", section) or "docker volume rm" in section
