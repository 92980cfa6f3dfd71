"""The real image, built and run without a Docker engine.

buildah builds the project's Dockerfile (`buildah bud --isolation chroot`), with only its BASE
overridden: `python:3.11-slim` cannot be pulled here (no container registry is reachable), so the
base is Debian bookworm made by `debootstrap --variant=minbase --include=python3,python3-venv`
from the mirror apt uses, and imported into buildah's storage. Each "container start" is a new
working container of the image (`buildah from`) in which `buildah run --isolation chroot` runs the
image's ENTRYPOINT + CMD (what `docker run` does) as UID 1000, with a host directory mounted as
the volume. Chroot isolation shares the host's network: a server inside listens on the host's
127.0.0.1, and the container reaches `loadtester target` on the host's 127.0.0.1.

Cache: the base and the image stay in buildah's storage (/var/lib/containers). The image's tag
is a hash of the Dockerfile and of every file of the build context (.dockerignore applied), so a
change to any of them builds a new image and anything else reuses it. Working containers are
removed after each test; images are kept.

Needs root (CI runs `make test` as root); buildah and debootstrap are installed when missing.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuid_mod
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TargetProcess, free_port, wait_for
from test_deploy_schemas import commented_merge_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DATA_DIR = "/home/pipeops/app/data"
APP_DIR = "/home/pipeops/app"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_REPO = "localhost/loadtester-test-base"
IMAGE_REPO = "localhost/loadtester-test"
CONTAINER_PREFIX = "loadtester-test-"
CACHE_DIR = Path("/var/lib/containers/loadtester-test")     # stamps and the build lock
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
VENV_LOADTESTER = ROOT / ".venv" / "bin" / "loadtester"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
# buildah's own lines on stderr when the command exits non-zero (not the container's output)
BUILDAH_STATUS_LINE = re.compile(r"^(subprocess exited (with status \d+|on \w+)|Error: exit status \d+)$")
# Bump when the way the base or the image is made changes (not its inputs: those are hashed).
RECIPE = "1"


# --------------------------------------------------------------------------- reporting

_config = None


def say(line: str) -> None:
    """A line on the terminal even under -q and output capture (build times, image size)."""
    reporter = _config and _config.pluginmanager.get_plugin("terminalreporter")
    capture = _config and _config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(f"[container] {line}", file=sys.__stderr__, flush=True)
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"[container] {line}")


# --------------------------------------------------------------------------- the tools

def _ensure_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/test_container.py needs root: buildah --isolation chroot and debootstrap "
                    "run as root (CI runs `make test` as root)")
    wanted = {"buildah": "buildah", "debootstrap": "debootstrap"}
    missing = [pkg for pkg, exe in wanted.items() if shutil.which(exe) is None]
    if missing:
        result = subprocess.run(
            f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(missing)}",
            shell=True, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or any(shutil.which(wanted[p]) is None for p in missing):
            pytest.fail(f"missing {', '.join(missing)} and apt-get could not install them:\n"
                        f"{result.stdout[-2000:]}{result.stderr[-2000:]}")


def buildah(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(["buildah", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {shlex.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def image_config(name: str) -> dict:
    """The image's Docker config (User, Env, Entrypoint, Cmd, Healthcheck, Volumes, ...)."""
    data = json.loads(buildah("inspect", "--type", "image", name).stdout)
    return data["Docker"]["config"]


def image_size(name: str) -> str:
    (row,) = json.loads(buildah("images", "--json", name).stdout)
    return row["size"]


@contextlib.contextmanager
def build_lock():
    """Two suites on one machine build one image, not two at once."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- apt's mirror and proxy

def apt_mirror(suite: str = SUITE) -> str:
    """The URI apt uses for `suite` itself (not -updates / -security); deb.debian.org otherwise."""
    found = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":                          # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields, key = {}, None
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                    else:
                        key, _, value = line.partition(":")
                        key = key.strip().lower()
                        fields[key] = value.strip()
                if (fields.get("enabled", "yes").lower() != "no" and "deb" in fields.get("types", "").split()
                        and suite in fields.get("suites", "").split()):
                    found += fields.get("uris", "").split()
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    found.append(words[1])
    for uri in found:
        if uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def proxy_env() -> dict:
    """The proxy apt uses (Acquire::http(s)::Proxy) and the proxy variables of this process."""
    env = {k: os.environ[k] for k in PROXY_VARS if os.environ.get(k)}
    result = subprocess.run(["apt-config", "shell", "HTTP", "Acquire::http::Proxy",
                             "HTTPS", "Acquire::https::Proxy"], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        value = shlex.split(value)[0] if value else ""
        if value and value.upper() != "DIRECT":
            env.setdefault(f"{name.lower()}_proxy", value)
    return env


# --------------------------------------------------------------------------- the base image

def _stamp(tag: str) -> dict | None:
    try:
        return json.loads((CACHE_DIR / (tag.replace("/", "_").replace(":", "_") + ".json")).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(tag: str, **data) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / (tag.replace("/", "_").replace(":", "_") + ".json")
    path.write_text(json.dumps({"tag": tag, "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), **data}))


def _remove_other_tags(repo: str, keep: str, newest: int = 3) -> None:
    """Older cached builds of `repo`: the NEWEST few stay (another checkout on this machine may be
    testing one of them), and so does an image a working container still uses."""
    rows = sorted(json.loads(buildah("images", "--json").stdout or "[]"),
                  key=lambda row: row.get("created", 0), reverse=True)
    names = [n for row in rows for n in row.get("names") or [] if n.startswith(repo + ":") and n != keep]
    for name in names[newest - 1:]:
        buildah("rmi", name, check=False)


def ensure_base() -> str:
    """Debian `SUITE` (minbase + python3, python3-venv) as an image: debootstrap, then commit."""
    mirror = apt_mirror()
    key = hashlib.sha256(f"{RECIPE} {SUITE} minbase {','.join(BASE_PACKAGES)} {mirror}".encode()).hexdigest()
    tag = f"{BASE_REPO}:{SUITE}-{key[:12]}"
    if image_exists(tag):
        stamp = _stamp(tag) or {}
        say(f"base {tag}: cached (debootstrap took {stamp.get('seconds', '?')} s on {stamp.get('built_at', '?')})")
        return tag
    started = time.monotonic()
    name = f"{CONTAINER_PREFIX}base-{uuid_mod.uuid4().hex[:8]}"
    buildah("from", "--name", name, "scratch")
    try:
        rootfs = buildah("mount", name).stdout.strip()
        env = {**os.environ, **proxy_env(), "DEBIAN_FRONTEND": "noninteractive"}
        with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, rootfs,
                 mirror], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=900)
            if result.returncode != 0:
                log.seek(0)
                pytest.fail(f"debootstrap {SUITE} from {mirror} failed:\n{log.read()[-4000:]}")
        # What Debian's container images leave out: package caches, lists, docs, device nodes
        # (the runtime provides /dev).
        subprocess.run(["chroot", rootfs, "apt-get", "clean"], check=True, capture_output=True)
        for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "dev/*", "usr/share/man/*",
                        "usr/share/info/*", "var/log/*.log", "var/log/apt/*", "tmp/*"):
            for path in Path(rootfs).glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        buildah("umount", name)
        buildah("config", "--env", f"PATH={DEFAULT_PATH}", "--cmd", "bash", "--os", "linux", name)
        buildah("commit", "--rm", "--format", "docker", name, tag, timeout=600)
    except BaseException:
        buildah("rm", name, check=False)
        raise
    seconds = round(time.monotonic() - started, 1)
    _write_stamp(tag, seconds=seconds, mirror=mirror)
    _remove_other_tags(BASE_REPO, keep=tag)
    say(f"base {tag}: debootstrap {SUITE} from {mirror} + commit took {seconds} s, {image_size(tag)}")
    return tag


# --------------------------------------------------------------------------- the image

def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def context_files() -> list[Path]:
    """The build context as buildah sees it: ROOT less what .dockerignore leaves out
    (a pattern matches a path or one of its parents; the last matching pattern wins)."""
    rules = []
    ignore = ROOT / ".dockerignore"
    for line in (ignore.read_text().splitlines() if ignore.is_file() else []):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip().strip("/") if negated else line.strip("/")
        rules.append((negated, pattern, _glob_regex(pattern)))

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        verdict = False
        for negated, _, regex in rules:
            if any(regex.match(p) for p in prefixes):
                verdict = not negated
        return verdict

    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and not (
            ignored(rel_dir + d) and not any(n and p.startswith(rel_dir + d + "/") for n, p, _ in rules)))
        files += [Path(dirpath) / f for f in sorted(filenames) if not ignored(rel_dir + f)]
    return sorted(files)


def source_hash(base: str) -> str:
    digest = hashlib.sha256(f"{RECIPE} {base}\n".encode())
    for path in context_files():
        rel = path.relative_to(ROOT).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{rel}\0{mode}\0".encode())
        digest.update(path.read_bytes() if not path.is_symlink() else os.readlink(path).encode())
    return digest.hexdigest()


def ensure_image(base: str) -> str:
    key = source_hash(base)
    tag = f"{IMAGE_REPO}:{key[:16]}"
    if image_exists(tag):
        stamp = _stamp(tag) or {}
        say(f"image {tag}: cached (built in {stamp.get('seconds', '?')} s on {stamp.get('built_at', '?')}), "
            f"{image_size(tag)}")
        return tag
    command = ["buildah", "bud", "--isolation", "chroot", "--format", "docker", "--pull=never",
               "--build-arg", f"BASE={base}", "-f", str(ROOT / "Dockerfile"), "-t", tag]
    if HOST_CA_BUNDLE.is_file():
        # pip in RUN reaches PyPI with the host's CA bundle, mounted for the build only
        command += ["-v", f"{HOST_CA_BUNDLE.parent}:{HOST_CA_BUNDLE.parent}:ro",
                    "--build-arg", f"PIP_CERT={HOST_CA_BUNDLE}"]
    for name, value in proxy_env().items():
        command += ["--build-arg", f"{name}={value}"]
    command.append(str(ROOT))
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
        if result.returncode != 0:
            log.seek(0)
            pytest.fail(f"{shlex.join(command)} failed:\n{log.read()[-6000:]}")
    seconds = round(time.monotonic() - started, 1)
    _write_stamp(tag, seconds=seconds, base=base)
    _remove_other_tags(IMAGE_REPO, keep=tag)
    say(f"image {tag}: built in {seconds} s ({shlex.join(command)}), {image_size(tag)}")
    return tag


@pytest.fixture(scope="module")
def image(pytestconfig):
    global _config
    _config = pytestconfig
    _ensure_tools()
    with build_lock():
        base = ensure_base()
        tag = ensure_image(base)
    return {"tag": tag, "base": base, "config": image_config(tag)}


# --------------------------------------------------------------------------- containers

def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Container:
    """One `docker run` of the image: a new working container (`buildah from`), commands run in
    it with `buildah run --isolation chroot` as UID 1000 with MOUNTS {host dir: path inside}.
    Several commands in one container are what `docker exec` does beside its main process."""

    def __init__(self, image: dict, mounts: dict | None = None, user: str | None = "1000:1000"):
        self.image = image
        self.mounts = dict(mounts or {})
        self.user = user
        self.name = f"{CONTAINER_PREFIX}{uuid_mod.uuid4().hex[:10]}"
        self.procs: list[subprocess.Popen] = []
        buildah("from", "--pull=never", "--name", self.name, image["tag"])

    def docker_run_command(self, args: list[str] | None = None) -> list[str]:
        """ENTRYPOINT + (ARGS or CMD), as `docker run IMAGE [ARGS]` runs them."""
        config = self.image["config"]
        return [*(config.get("Entrypoint") or []), *(args if args is not None else config.get("Cmd") or [])]

    def argv(self, command, env=None, user="default") -> list[str]:
        user = self.user if user == "default" else user
        argv = ["buildah", "run", "--isolation", "chroot"]
        if user:
            argv += ["--user", user]
        for host, inside in self.mounts.items():
            argv += ["-v", f"{host}:{inside}"]
        for name, value in (env or {}).items():
            argv += ["--env", f"{name}={value}"]
        return [*argv, self.name, "--", *map(str, command)]

    def run(self, command, env=None, timeout=120, user="default") -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(command, env, user), capture_output=True, text=True,
                                timeout=timeout)
        result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True)
                                if not BUILDAH_STATUS_LINE.match(line.strip()))
        return result

    def start(self, command, env=None, log: Path | None = None) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(self.argv(command, env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if log:
            out.close()
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill9(proc: subprocess.Popen) -> list[int]:
        """SIGKILL to `buildah run` and everything under it at once (what the kernel does to a
        container's processes when `docker kill` sends SIGKILL): the app gets no chance to clean up."""
        tree = [proc.pid, *descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: not any(alive(p) for p in tree), timeout_s=10), "a process survived SIGKILL"
        return tree

    @staticmethod
    def stop(proc: subprocess.Popen, timeout_s=20.0) -> None:
        """`docker stop`: SIGTERM to the container's processes, SIGKILL after a grace period."""
        tree = [proc.pid, *descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            Container.kill9(proc)
        if not wait_for(lambda: not any(alive(p) for p in tree), timeout_s=timeout_s):
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError("the container's processes outlived SIGTERM by "
                                 f"{timeout_s} s: {[p for p in tree if alive(p)]}")

    def remove(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill9(proc)
        buildah("rm", self.name, check=False)


@pytest.fixture
def containers(image):
    """Containers a test starts; all removed (`buildah rm`) at the end, the image is kept."""
    made = []

    def make(mounts=None, user="1000:1000") -> Container:
        container = Container(image, mounts, user)
        made.append(container)
        return container

    yield make
    for container in made:
        container.remove()


def make_volume(path: Path, uid: int = 1000, mode: int = 0o750) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def api(port: int, method: str, path: str, body=None, timeout=15) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"raw": raw.decode(errors="replace")}
    finally:
        conn.close()


def wait_status(port: int, run_uuid: str, wanted: set, timeout_s=30.0) -> dict:
    seen = {}

    def check():
        status, body = api(port, "GET", f"/api/status/{run_uuid}")
        seen.clear()
        seen.update(body, http_status=status)
        return body.get("status") in wanted
    assert wait_for(check, timeout_s, 0.2), f"run {run_uuid} stayed {seen}"
    return seen


def host_loadtester(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_LOADTESTER), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def target():
    started = TargetProcess()
    yield started
    started.stop()


# --------------------------------------------------------------------------- the image itself

def test_image_is_the_dockerfile_non_root_and_without_compilers(image, containers):
    from test_deploy import _exec_form, dockerfile_instructions

    config = image["config"]
    stage = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    stage = stage[max(i for i, (kw, _) in enumerate(stage) if kw == "FROM"):]
    last = {kw: args for kw, args in stage}
    assert config["User"] == last["USER"] == "1000:1000"
    assert config["WorkingDir"] == APP_DIR
    assert config["Entrypoint"] == _exec_form(last["ENTRYPOINT"]) == ["loadtester-entrypoint"]
    assert config["Cmd"] == _exec_form(last["CMD"])
    assert config["Cmd"][:2] == ["loadtester", "serve"]
    assert config["Healthcheck"]["Test"] == ["CMD", "loadtester", "healthcheck"], \
        "HEALTHCHECK was dropped (an OCI-format build drops it: build with --format docker)"
    assert DATA_DIR in config["Volumes"] and "8080/tcp" in config["ExposedPorts"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["DB_PATH"] == f"{DATA_DIR}/loadtest.db" and env["PORT"] == "8080"

    # the default user (no --user): the image's USER
    probe = containers(user=None)
    who = probe.run(["sh", "-c", "id -u; id -g; stat -c '%u:%g %a' " + DATA_DIR])
    assert who.returncode == 0, who.stderr
    assert who.stdout.split("\n")[:3] == ["1000", "1000", "1000:1000 750"], who.stdout
    # no compiler in the runtime stage (it is in the build stage only), no build leftovers
    tools = probe.run(["sh", "-c", "for t in gcc cc c++ g++ clang ld as make cython; do "
                                   "command -v $t; done; ls -d /wheels /src 2>/dev/null; true"])
    assert tools.returncode == 0 and tools.stdout.strip() == "", f"found in the runtime image: {tools.stdout}"
    # the image's own data directory (no volume mounted) works too
    runs = probe.run(probe.docker_run_command(["loadtester", "runs", "--json"]))
    assert runs.returncode == 0 and json.loads(runs.stdout) == [], runs.stderr
    # the PDF reports' font (fonts-dejavu-core): text in any script it covers, not '?'
    font = probe.run(["/opt/venv/bin/python", "-c",
                      "from loadtester.reports import pdfreport; print(pdfreport.UNICODE)"])
    assert font.returncode == 0 and font.stdout.strip() == "True", (font.stdout, font.stderr)

    # the host's CA bundle was mounted for the build, not copied in: /etc/ssl/certs is the base's
    certs = "ls -A /etc/ssl/certs 2>/dev/null | sha256sum; cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null | sha256sum"
    in_image = probe.run(["sh", "-c", certs])
    base = Container({"tag": image["base"], "config": {}}, user=None)
    try:
        in_base = base.run(["sh", "-c", certs])
    finally:
        base.remove()
    assert in_image.returncode == in_base.returncode == 0
    assert in_image.stdout == in_base.stdout, "the image's /etc/ssl/certs differs from its base's"
    say(f"image size: {image_size(image['tag'])} (base {image_size(image['base'])})")


# --------------------------------------------------------------------------- persistence

def test_serve_killed_mid_run_then_restarted_on_the_same_volume(image, containers, target, tmp_path):
    """The image's CMD (`loadtester serve --host 0.0.0.0`) with `--allow-private --host 127.0.0.1`
    appended: the built-in target is on loopback, which the web app refuses without
    --allow-private; and chroot isolation shares the host's network, so the test keeps the app
    on the host's loopback rather than on all its interfaces. PORT (the image's ENV) is set to a
    free port, as `docker run -e PORT=...` would."""
    volume = make_volume(tmp_path / "volume")
    port = free_port()
    env = {"PORT": str(port)}
    first = containers({volume: DATA_DIR})
    serve = first.docker_run_command([*image["config"]["Cmd"], "--allow-private", "--host", "127.0.0.1"])
    health = image["config"]["Healthcheck"]["Test"][1:]           # ["CMD", *command]

    def healthy(container):
        return container.run(health, env).returncode == 0

    assert not healthy(first), "healthcheck passed before serve started"
    server = first.start(serve, env, log=tmp_path / "serve-1.log")
    assert wait_for(lambda: healthy(first), timeout_s=30, interval_s=0.5), \
        (tmp_path / "serve-1.log").read_text()[-3000:]
    check = first.run(health, env)
    assert check.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz", check.stdout + check.stderr

    # a run that completes, then one that the SIGKILL interrupts
    status, body = api(port, "POST", "/api/start", {"url": target.url, "users": 2, "duration": 2,
                                                     "label": "completed-before-kill"})
    assert status == 201, body
    done = body["uuid"]
    wait_status(port, done, {"completed"})
    done_metrics = api(port, "GET", f"/api/metrics/{done}")[1]
    # a duration run does not count the requests in flight when time is up (up to one per user)
    assert 0 <= target.stats()["served"] - done_metrics["requests"] <= 2 and done_metrics["requests"] > 0

    status, body = api(port, "POST", "/api/start", {"url": target.url, "users": 2, "duration": 60,
                                                     "label": "killed"})
    assert status == 201, body
    live = body["uuid"]
    assert wait_for(lambda: api(port, "GET", f"/api/timeseries/{live}")[1].get("seconds"), 15, 0.2), \
        "the live run stored no window"
    killed = first.kill9(server)
    assert len(killed) >= 4, killed      # buildah run, chroot runtime, exec, serve (+ the blast)
    served = target.stats()["served"]
    assert served > done_metrics["requests"]
    time.sleep(1.0)
    assert target.stats()["served"] == served, "load went on after the container was killed"
    first.remove()

    # SQLite's files are on the volume, owned by UID 1000; the WAL was not checkpointed away
    files = {p.name: p.stat() for p in volume.iterdir()}
    assert {"loadtest.db", "loadtest.db-wal", "loadtest.db-shm"} <= set(files), sorted(files)
    assert all(st.st_uid == 1000 for st in files.values())

    # a new container on the same volume: the entrypoint marks the killed run before serve starts
    second = containers({volume: DATA_DIR})
    server = second.start(serve, env, log=tmp_path / "serve-2.log")
    assert wait_for(lambda: healthy(second), timeout_s=30, interval_s=0.5), \
        (tmp_path / "serve-2.log").read_text()[-3000:]
    assert wait_status(port, live, {"interrupted"})["status"] == "interrupted"
    assert wait_status(port, done, {"completed"})["status"] == "completed"
    assert api(port, "GET", f"/api/metrics/{done}")[1] == done_metrics        # intact
    killed_metrics = api(port, "GET", f"/api/metrics/{live}")[1]
    assert killed_metrics["status"] == "interrupted" and killed_metrics["requests"] > 0

    runs = second.run(["loadtester", "runs", "--json"])                       # docker exec
    assert runs.returncode == 0, runs.stderr
    by_uuid = {r["uuid"]: r for r in json.loads(runs.stdout)}
    assert by_uuid[done]["status"] == "completed"
    assert by_uuid[done]["total_requests"] == done_metrics["requests"]
    assert by_uuid[live]["status"] == "interrupted" and by_uuid[live]["total_requests"] > 0

    db_check = second.run(["loadtester", "db", "check"])
    assert db_check.returncode == 0, db_check.stdout + db_check.stderr
    assert db_check.stdout.strip() == f"{DATA_DIR}/loadtest.db: ok"
    backup = second.run(["loadtester", "db", "backup", f"{DATA_DIR}/backup.db"])   # serve still up
    assert backup.returncode == 0, backup.stdout + backup.stderr
    Container.stop(server)
    assert server.returncode is not None

    copy = volume / "backup.db"
    assert copy.stat().st_uid == 1000
    host_check = host_loadtester("db", "check", "--db", copy)
    assert host_check.returncode == 0 and host_check.stdout.strip() == f"{copy}: ok", \
        host_check.stdout + host_check.stderr
    copied = host_loadtester("runs", "--json", "--db", copy)
    assert copied.returncode == 0, copied.stderr
    assert {r["uuid"]: (r["status"], r["total_requests"]) for r in json.loads(copied.stdout)} == \
        {u: (r["status"], r["total_requests"]) for u, r in by_uuid.items()}


def test_a_volume_owned_by_another_uid_gets_one_line(image, containers, tmp_path):
    volume = make_volume(tmp_path / "volume", uid=1001)
    container = containers({volume: DATA_DIR})
    result = container.run(container.docker_run_command(["loadtester", "runs", "--json"]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"loadtester: data directory {DATA_DIR} is not writable by uid 1000; "
        "mount the volume writable for UID 1000"], result.stderr
    assert list(volume.iterdir()) == []


# --------------------------------------------------------------------------- the Indexed Job

TOTAL_REQUESTS = 8000
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def k8s_expand(text: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $,
    unknown references stay as written."""
    return _VAR_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def pod_env(container: dict, index: int) -> dict:
    """A pod's environment for completion INDEX, resolved as the kubelet does: in order, each value
    expanding the ones before it; the Job controller appends JOB_COMPLETION_INDEX."""
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    entries = [*container.get("env", []), {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    env = {}
    for entry in entries:
        if "value" in entry:
            env[entry["name"]] = k8s_expand(str(entry["value"]), env)
        else:
            path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
            assert match and match.group(1) in annotations, f"fieldRef {path} is not emulated here"
            env[entry["name"]] = annotations[match.group(1)]
    return env


def _set_option(args: list[str], flag: str, *replacement: str) -> None:
    """Replace `flag VALUE` in ARGS by REPLACEMENT."""
    assert flag in args, f"{flag} is not in the Job's args {args}"
    at = args.index(flag)
    args[at:at + 2] = replacement


def test_indexed_job_shards_then_merge_count_what_the_target_served(image, containers, target, tmp_path):
    """deploy/k8s/blast-job.yaml as Kubernetes runs it: `completions` pods at once, pod i with
    JOB_COMPLETION_INDEX=i, its env and args expanded as the kubelet does, the image's entrypoint
    running the args as UID 1000 with the shared volume at /data; then the merge Job written in
    the file's comments. Changed for the test: TARGET_URL is the built-in target on 127.0.0.1,
    `-d 5m` is `-n 8000` and `--rate 20000` is 4000. A count rather than a duration: with -d the
    requests in flight when time is up are not counted (README, "counts"), with -n the whole run's
    count is split among the shards and each one is counted, so the merged run must equal what the
    target served."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "blast-job.yaml").read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    completions = spec["completions"]
    assert spec.get("parallelism", 1) == completions          # the shards run at the same time
    pod = spec["template"]["spec"]
    (blast,) = pod["containers"]
    security = pod["securityContext"]
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    (mount,) = blast["volumeMounts"]
    shards = make_volume(tmp_path / "shards", uid=security["fsGroup"], mode=0o770)

    procs = []
    for index in range(completions):
        env = pod_env(blast, index)
        env["TARGET_URL"] = target.url
        args = [k8s_expand(a, env) for a in blast["args"]]
        _set_option(args, "-d", "-n", str(TOTAL_REQUESTS))
        _set_option(args, "--rate", "--rate", "4000")
        assert f"{index}/{completions}" in args and f"/data/shard-{index}.db" in args, args
        command = [*(blast.get("command") or image["config"]["Entrypoint"]), *args]
        container = containers({shards: mount["mountPath"]}, user=user)
        procs.append((index, container.start(command, env, log=tmp_path / f"shard-{index}.log")))
    for index, proc in procs:
        assert proc.wait(timeout=120) == 0, (tmp_path / f"shard-{index}.log").read_text()[-3000:]
    assert sorted(p.name for p in shards.glob("shard-*.db")) == [f"shard-{i}.db" for i in range(completions)]

    merge_job = commented_merge_job()
    merge_pod = merge_job["spec"]["template"]["spec"]
    (merge,) = merge_pod["containers"]
    merge_env = pod_env(merge, 0)
    merge_env.pop("JOB_COMPLETION_INDEX")                     # not an Indexed Job
    merge_user = f"{merge_pod['securityContext']['runAsUser']}:{merge_pod['securityContext']['runAsGroup']}"
    merger = containers({shards: merge["volumeMounts"][0]["mountPath"]}, user=merge_user)
    merged = merger.run([*(merge.get("command") or image["config"]["Entrypoint"]), *merge["args"]], merge_env)
    assert merged.returncode == 0, merged.stdout + merged.stderr

    runs = host_loadtester("runs", "--json", "--db", shards / "all.db")
    assert runs.returncode == 0, runs.stderr
    (run,) = json.loads(runs.stdout)
    served = target.stats()["served"]
    say(f"indexed job: {completions} shards, merged run {run['total_requests']} requests, "
        f"target served {served}")
    assert run["status"] == "completed"
    assert run["total_requests"] == served == TOTAL_REQUESTS
