"""Finding Java and the Kafka jars, without downloading anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxi_kafka.cluster import ClusterError, PrerequisiteError
from taxi_kafka.cluster import _jars as jars
from taxi_kafka.cluster._local import default_runtime_dir, find_workspace_root


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("bash: java: command not found", None),
    ],
)
def test_java_versions(output, major):
    assert jars.parse_java_major(output) == major


def test_kafka_version_from_jar_names():
    names = ["kafka-clients-4.1.2.jar", "kafka_2.13-4.1.2-test.jar", "kafka_2.13-4.1.2.jar"]
    assert jars.kafka_version_in(names) == "4.1.2"
    assert jars.kafka_version_in(["kafka-clients-4.1.2.jar"]) is None


def test_default_cache_follows_xdg(tmp_path):
    assert jars.default_jars_dir("4.1.2", {"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "ml-taxi" / "kafka-4.1.2" / "libs"
    )


def test_kafka_home_is_used_as_is(tmp_path):
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.1.1.jar").touch()
    found = jars.ensure_jars("4.1.2", kafka_home=tmp_path)
    assert found == jars.KafkaJars(tmp_path / "libs", "4.1.1", "KAFKA_HOME")


def test_a_kafka_home_without_kafka_is_refused(tmp_path):
    with pytest.raises(ClusterError, match="not a Kafka distribution"):
        jars.ensure_jars(kafka_home=tmp_path)


def test_a_complete_download_is_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(jars, "_download", pytest.fail)
    (tmp_path / jars.COMPLETE_MARKER).touch()
    assert jars.ensure_jars("4.1.2", tmp_path).source == "cache"


def test_an_unfinished_download_is_redone(tmp_path, monkeypatch):
    (tmp_path / "half.jar").touch()
    calls = []

    def download(mvn: str, version: str, directory: Path) -> None:
        calls.append((version, sorted(p.name for p in directory.iterdir())))

    monkeypatch.setattr(jars, "_download", download)
    monkeypatch.setattr(jars, "find_maven", lambda: "mvn")
    assert jars.ensure_jars("4.1.2", tmp_path).source == "maven"
    assert calls == [("4.1.2", [])]


def test_missing_tools_name_what_to_install(monkeypatch):
    monkeypatch.setattr(jars.shutil, "which", lambda _name: None)
    with pytest.raises(PrerequisiteError, match="apt-get install -y openjdk-17-jre-headless"):
        jars.find_java({})
    with pytest.raises(PrerequisiteError, match="maven"):
        jars.find_maven()


def test_an_old_java_is_refused(tmp_path):
    fake_java = tmp_path / "bin" / "java"
    fake_java.parent.mkdir()
    fake_java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    fake_java.chmod(0o755)
    with pytest.raises(PrerequisiteError, match=r"needs Java 17\+.*1\.8\.0_392"):
        jars.find_java({"JAVA_HOME": str(tmp_path)})


def test_runtime_dir_defaults(tmp_path):
    assert default_runtime_dir({"TAXI_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "cluster"
    (tmp_path / "pyproject.toml").write_text("[tool.uv.workspace]\nmembers = []\n")
    (tmp_path / "libs" / "x").mkdir(parents=True)
    assert find_workspace_root(tmp_path / "libs" / "x") == tmp_path
    assert default_runtime_dir({}, tmp_path / "libs" / "x") == tmp_path / ".taxi" / "cluster"
