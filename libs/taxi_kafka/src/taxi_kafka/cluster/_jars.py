"""Java, and the broker's jars: from $KAFKA_HOME, from the cache, or from Maven Central via mvn."""

from __future__ import annotations

import collections
import importlib.resources
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from taxi_kafka.cluster._errors import ClusterError, PrerequisiteError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.2"
MIN_JAVA = 17
INSTALL_HINT = "On Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless maven"
# Written last, so a directory without it holds an interrupted download.
COMPLETE_MARKER = ".taxi-complete"
PROGRESS_EVERY = 5.0

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
_KAFKA_JAR = re.compile(r"^kafka_2\.13-(\d+\.\d+\.\d+.*)\.jar$")


@dataclass(frozen=True)
class KafkaJars:
    directory: Path
    version: str
    # "KAFKA_HOME", "cache" or "maven": where the jars came from this time.
    source: str


def parse_java_major(version_output: str) -> int | None:
    """The major version in `java -version` output; "1.8.0_392" is Java 8."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def kafka_version_in(jar_names: Iterable[str]) -> str | None:
    """The Kafka version of a libs directory, from its kafka_2.13-<version>.jar."""
    for name in jar_names:
        match = _KAFKA_JAR.match(name)
        if match and not name.endswith(("-sources.jar", "-javadoc.jar", "-test.jar")):
            return match.group(1)
    return None


def default_jars_dir(version: str, env: Mapping[str, str] = os.environ) -> Path:
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ml-taxi" / f"kafka-{version}" / "libs"


def find_java(env: Mapping[str, str] = os.environ) -> str:
    """The java executable (JAVA_HOME first), checked to be Java 17 or newer."""
    java_home = env.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        raise PrerequisiteError(
            f"Java {MIN_JAVA}+ is needed to run Kafka, and none was found. {INSTALL_HINT}"
        )
    result = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stderr + result.stdout
    major = parse_java_major(output)
    if major is None or major < MIN_JAVA:
        found = output.strip().splitlines()[0] if output.strip() else "no version output"
        raise PrerequisiteError(
            f"Kafka 4 needs Java {MIN_JAVA}+, but {java} is: {found}. {INSTALL_HINT} "
            "(and make it the default with update-alternatives or JAVA_HOME)"
        )
    return java


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            "Maven (mvn) is needed once, to fetch the Kafka jars from Maven Central. "
            f"{INSTALL_HINT} -- or point KAFKA_HOME at an unpacked Kafka 4.1 release."
        )
    return mvn


def kafka_home_jars(kafka_home: Path) -> KafkaJars:
    libs = kafka_home / "libs"
    version = kafka_version_in(p.name for p in libs.glob("kafka_2.13-*.jar"))
    if version is None:
        raise ClusterError(
            f"KAFKA_HOME={kafka_home} is not a Kafka distribution (no libs/kafka_2.13-*.jar); "
            "unset it to fetch Kafka from Maven Central instead"
        )
    return KafkaJars(libs, version, "KAFKA_HOME")


def ensure_jars(
    version: str = KAFKA_VERSION,
    jars_dir: Path | None = None,
    kafka_home: Path | None = None,
) -> KafkaJars:
    """The broker's classpath directory, downloading it on first use."""
    if kafka_home is not None:
        return kafka_home_jars(kafka_home)
    directory = jars_dir or default_jars_dir(version)
    if (directory / COMPLETE_MARKER).exists():
        return KafkaJars(directory, version, "cache")
    if directory.exists() and any(directory.glob("*.jar")):
        log.warning("%s holds an unfinished download; fetching the Kafka jars again", directory)
        for jar in directory.glob("*.jar"):
            jar.unlink()
    _download(find_maven(), version, directory)
    return KafkaJars(directory, version, "maven")


def _download(mvn: str, version: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    log.info("fetching Kafka %s and its dependencies from Maven Central to %s", version, directory)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taxi-kafka-jars-") as work:
        pom = Path(work, "pom.xml")
        pom.write_bytes(
            importlib.resources.files("taxi_kafka.cluster").joinpath("kafka-jars.pom").read_bytes()
        )
        # Not -q: the "Downloaded from" lines are our progress counter.
        command = [
            mvn,
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={directory}",
        ]
        process = subprocess.Popen(
            command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        progress = _MavenOutput(process.stdout)
        while True:
            try:
                process.wait(timeout=PROGRESS_EVERY)
                break
            except subprocess.TimeoutExpired:
                log.info(
                    "still downloading... %d files so far (%.0f s)",
                    progress.downloaded,
                    time.monotonic() - started,
                )
        progress.join()
    if process.returncode != 0:
        raise ClusterError(
            f"mvn could not fetch Kafka {version} (exit {process.returncode}):\n"
            + "\n".join(progress.tail)
        )
    jars = sorted(p.name for p in directory.glob("*.jar"))
    (directory / COMPLETE_MARKER).write_text(f"kafka {version}\n" + "\n".join(jars) + "\n")
    log.info("fetched %d jars in %.1f s", len(jars), time.monotonic() - started)


class _MavenOutput:
    """Reads mvn's output on a thread: counts downloads and keeps the tail for error messages."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.downloaded = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            if "Downloaded from" in line:
                self.downloaded += 1
            self.tail.append(line.rstrip())

    def join(self) -> None:
        self._thread.join()
