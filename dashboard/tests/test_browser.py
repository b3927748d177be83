"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) on a real cluster,
with the real pipeline processes feeding it; then with one broker stopped.

The cluster is this module's own: it starts empty (for the page without data) and one of its
brokers is stopped. Screenshots go to $TAXI_TEST_ARTIFACTS, or else <repo>/test-artifacts/
(taxi_dashboard.testing).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from taxi_dashboard.live_map import LAND_FILL
from taxi_dashboard.testing import (
    PAINT_TIMEOUT_MS,
    artifacts_dir,
    assert_no_exception,
    chromium,
    grid_texts,
    open_page,
    screenshot,
)
from taxi_events import DeploymentDecision, ModelEvent, ModelMetrics, encode
from taxi_kafka import (
    MODEL_DEPLOYMENTS,
    MODEL_EVENTS,
    MODEL_METRICS,
    PROJECT_TOPICS,
    KafkaConfig,
    KafkaProducer,
    ensure_topics,
)
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import free_base_port, wait_for
from taxi_model import generate_trips, train_and_save, write_synthetic
from taxi_services.registry import ModelRegistry, ensure_champion
from taxi_services.supervisor import Child, free_port, stop_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STOPPED_BROKER = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    runtime_dir = Path(tempfile.mkdtemp(prefix="taxi-dashboard-test-"))
    cluster = LocalCluster(runtime_dir, base_port=free_base_port())
    try:
        cluster.up()
        ensure_topics(cluster.admin(), PROJECT_TOPICS)
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "taxi_pipeline.skops"
    train_and_save(generate_trips(rows=3000, seed=5), "synthetic rows=3000 seed=5", path)
    return path


def dashboard(workdir: Path) -> tuple[Child, str]:
    port = free_port()
    child = Child(
        "dashboard",
        [
            "taxi-dashboard",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--refresh",
            "1",
            "--health-interval",
            "1",
        ],
        0,
        workdir / "dashboard.log",
    )
    return child, f"http://127.0.0.1:{port}"


def records_read(page: Page) -> int:
    text = page.locator(".st-key-status").inner_text()
    found = re.search(r"([\d,]+) records read", text)
    assert found, text
    return int(found[1].replace(",", ""))


WHITE = np.array([255, 255, 255])
# The boroughs' translucent fill over the page's white, as the browser blends it.
LAND = WHITE - (WHITE - LAND_FILL[:3]) * LAND_FILL[3] / 255
# The same while Streamlit reruns the page: it draws stale elements at a third of their opacity,
# and on a loaded machine a rerun of every second's refresh can take most of the second.
STALE_LAND = WHITE - (WHITE - LAND) / 3


def map_shares(page: Page, name: str) -> tuple[float, float]:
    """Screenshots the map into `name` and returns the shares of its pixels that are bare land
    (the boroughs' fill, faded or not) and bare water (the white page: no tiles)."""
    path = artifacts_dir() / name
    # A clip of the page: the element's own screenshot waits for it to be still, and the map
    # redraws every second.
    box = page.locator(".st-key-live-map").bounding_box()
    assert box is not None
    page.screenshot(path=str(path), clip=box)
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)

    def share(colour: np.ndarray) -> float:
        return float((np.abs(pixels - colour) <= 6).all(axis=-1).mean())

    return share(LAND) + share(STALE_LAND), share(WHITE)


def boroughs_drawn(page: Page, name: str) -> bool:
    """Without tiles, the boroughs still show New York: land (under any trips), and water
    around it. The map's screenshot goes to dashboard-<name>-map.png."""
    land, water = map_shares(page, f"dashboard-{name}-map.png")
    print(f"{name} map: {land:.0%} bare land, {water:.0%} bare water")
    return land > 0.1 and water > 0.05


def test_without_data_the_page_says_what_to_start(cluster, browser, tmp_path):
    child, url = dashboard(tmp_path)
    child.start({"KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers})
    try:
        page = open_page(browser, url, offline=True)
        expect(page.get_by_text("No trips yet.")).to_be_visible(timeout=PAINT_TIMEOUT_MS)
        expect(page.get_by_text("uv run taxi up").first).to_be_visible()
        expect(page.locator(".st-key-status")).to_contain_text("0 records read")
        # No trips yet, and no tiles: the map still shows New York.
        expect(page.locator(".st-key-live-map canvas").first).to_be_visible(
            timeout=PAINT_TIMEOUT_MS
        )
        wait_for("the boroughs on the empty map", lambda: boroughs_drawn(page, "empty"), 60)
        # No model serves yet: no drift banner, not even a calm one.
        expect(page.locator(".st-key-drift-banner")).to_have_count(0)
        assert_no_exception(page)
        screenshot(page, "dashboard-empty.png")
        page.close()
    finally:
        codes = stop_all([child])
    assert codes == {"dashboard": 0}, child.log_path.read_text()


def test_the_live_page_shows_trips_and_keeps_updating_with_a_broker_down(
    cluster, browser, model_path, tmp_path
):
    train_csv, test_csv = write_synthetic(tmp_path / "data", rows=20_000, seed=11, test_rows=20_000)
    # The predictor takes its models from the registry.
    registry = ModelRegistry(KafkaConfig(cluster.bootstrap_servers))
    champion = ensure_champion(registry, model_path, "the browser test's model")
    children = [
        Child(
            "predictor",
            ["taxi-predictor", "--instance", "p1"],
            0,
            tmp_path / "predictor.log",
        ),
        Child(
            "aggregator",
            ["taxi-aggregator", "--instance", "a1", "--window", "2", "--grace", "1"],
            0,
            tmp_path / "aggregator.log",
        ),
        *(
            Child(
                f"producer-{source}",
                [
                    *("taxi-producer", "--source", source, "--data", str(csv)),
                    *("--instance", "b", "--rate", "20", "--no-progress"),
                ],
                0,
                tmp_path / f"producer-{source}.log",
            )
            for source, csv in (("train", train_csv), ("test", test_csv))
        ),
    ]
    child, url = dashboard(tmp_path)
    children.append(child)
    # A crash or a hang then leaves each thread's Python stack in the service's log.
    env = {"KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, "PYTHONFAULTHANDLER": "1"}
    started = time.monotonic()
    try:
        for process in children:
            process.start(env)
        # Offline, as CI is: no map tiles, only the dashboard answers.
        page = open_page(browser, url, offline=True)
        expect(page.locator(".st-key-live-map canvas").first).to_be_visible(
            timeout=PAINT_TIMEOUT_MS
        )
        # The table draws on a canvas; its cells are in the accessibility tree behind it.
        first_trip = page.locator(
            ".st-key-live-records [role=gridcell]", has_text=re.compile("^id")
        )
        first_trip.first.wait_for(state="attached", timeout=PAINT_TIMEOUT_MS)
        # The champion named by the registry's decision, scored by the aggregator.
        expect(page.locator(".st-key-model-roles")).to_contain_text(
            f"Champion {champion} · challenger none", timeout=PAINT_TIMEOUT_MS
        )
        wait_for(
            "the champion's cumulative figures",
            lambda: champion in grid_texts(page, "champion-cumulative"),
            180,
        )
        assert_no_exception(page)
        print(f"live page drawn {time.monotonic() - started:.0f} s after the start")
        shot = screenshot(page, "dashboard.png")
        assert shot.stat().st_size > 50_000

        wait_for("the boroughs on the offline map", lambda: boroughs_drawn(page, "offline"), 60)

        # A second tab is served by the same reader: the topics are assigned once.
        second = open_page(browser, url, offline=True)
        expect(second.locator(".st-key-status")).to_contain_text(
            "records read", timeout=PAINT_TIMEOUT_MS
        )
        second.close()
        assert child.log_path.read_text().count("reading new_trips") == 1

        assert cluster.stop_broker(STOPPED_BROKER)
        expect(page.get_by_text(f"1 of 3 brokers down (broker {STOPPED_BROKER})")).to_be_visible(
            timeout=120_000
        )
        before = records_read(page)
        wait_for("records read with a broker down", lambda: records_read(page) > before + 50, 180)
        assert_no_exception(page)
        screenshot(page, "dashboard-broker-down.png")

        assert cluster.start_broker(STOPPED_BROKER)
        expect(page.get_by_text("brokers down")).to_have_count(0, timeout=180_000)
        assert_no_exception(page)
        page.close()
    finally:
        codes = stop_all(children, dump_stacks=True)
        exits = {c.name: c.process.returncode for c in children if c.process is not None}
        print(f"exit codes: {exits}; dashboard log: {child.log_path}")
    assert codes["dashboard"] == 0, child.log_path.read_text()


# Versions as `taxi train` makes them (12 hex digits of the model file's sha256).
RETIRED = "c0ffee000000"
CHAMPION = "c0ffee000001"
CHALLENGER = "c0ffee000002"


def quality(source: str, role: str, version: str, rival: str | None, **fields) -> ModelMetrics:
    values = {
        "scope": "cumulative",
        "window_start": None,
        "window_end": None,
        "count": 120,
        "rmsle": 0.5,
        "mae": 80.0,
        "median_ape": 0.2,
        "within_30": 0.6,
        "unmatched": 0,
        **fields,
    }
    return ModelMetrics(
        source=source, role=role, model_version=version, challenger_version=rival, **values
    )


def written_before_roles(metrics: ModelMetrics) -> bytes:
    """`metrics` as a schema 1.0 record: without role and challenger_version."""
    document = json.loads(encode(metrics))
    del document["role"], document["challenger_version"]
    return json.dumps({**document, "schema_version": "1.0"}).encode()


def drift(version: str, detail: str, **fields) -> ModelEvent:
    values = {
        "kind": "concept-drift",
        "source": "train",
        "detector": "page-hinkley",
        "statistic": "log_error",
        "value": 12.5,
        "threshold": 10.0,
        "trips": 1_850,
        "first_trip_id": "id0001000",
        "last_trip_id": "id0002849",
        "evidence": {"mean_log_error_before": 0.31, "mean_log_error_after": 0.52},
        **fields,
    }
    return ModelEvent(model_version=version, detail=detail, **values)


# Last: its decisions name models that no registry holds, which a predictor started after it
# would follow.
def test_the_drift_banner_the_champion_beside_the_challenger_and_the_history(
    cluster, browser, tmp_path
):
    now = datetime.now(UTC)
    window_start = now - timedelta(seconds=30)
    events = [
        # Drift on a model that no longer serves is history, not a banner.
        drift(RETIRED, "The retired model drifted.", occurred_at=now - timedelta(hours=6)),
        drift(CHAMPION, "Trips take longer than the champion predicts."),
        drift(
            CHAMPION,
            "Pickups moved to another borough.",
            kind="data-drift",
            source="test",
            detector="psi",
            statistic="psi:pickup_area",
            value=0.41,
            threshold=0.25,
            evidence={"psi:pickup_area": 0.41, "psi:distance_km": 0.05},
        ),
        ModelEvent(
            kind="candidate",
            model_version=CHALLENGER,
            detail="Retrained on the newest trips.",
            evidence={"candidate_rmsle": 0.38, "champion_rmsle": 0.45},
        ),
    ]
    decisions = [
        DeploymentDecision(
            action="publish",
            version=CHAMPION,
            champion=CHAMPION,
            challenger=None,
            actor="ana@host",
            reason="the first model",
            decided_at=now - timedelta(hours=5),
        ),
        DeploymentDecision(
            action="publish",
            version=CHALLENGER,
            champion=CHAMPION,
            challenger=CHALLENGER,
            actor="bo@host",
            reason="retrained on March",
            decided_at=now - timedelta(minutes=5),
        ),
    ]
    records = [
        (MODEL_METRICS, encode(quality("train", "champion", CHAMPION, None, count=900))),
        (
            MODEL_METRICS,
            encode(quality("train", "champion", CHAMPION, CHALLENGER, rmsle=0.41234)),
        ),
        (
            MODEL_METRICS,
            encode(quality("train", "challenger", CHALLENGER, CHALLENGER, rmsle=0.39012)),
        ),
        # An aggregator from before roles: its figures are the champion's over all its trips.
        (
            MODEL_METRICS,
            written_before_roles(quality("test", "champion", CHAMPION, None, count=345)),
        ),
        *(
            (
                MODEL_METRICS,
                encode(
                    quality(
                        "train",
                        "champion",
                        CHAMPION,
                        None,
                        scope="window",
                        window_start=window_start + timedelta(seconds=10 * n),
                        window_end=window_start + timedelta(seconds=10 * n + 10),
                        rmsle=0.4 + n / 50,
                    )
                ),
            )
            for n in range(3)
        ),
        *((MODEL_DEPLOYMENTS, encode(d)) for d in decisions),
        *((MODEL_EVENTS, encode(e)) for e in events),
    ]
    with KafkaProducer(KafkaConfig(cluster.bootstrap_servers), name="test producer") as producer:
        for topic, value in records:
            producer.produce(topic, value)
        assert producer.flush(60) == 0
    child, url = dashboard(tmp_path)
    child.start({"KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers})
    try:
        page = open_page(browser, url, offline=True)
        banner = page.locator(".st-key-drift-banner")
        expect(banner).to_contain_text(
            f"The champion {CHAMPION} has drifted.", timeout=PAINT_TIMEOUT_MS
        )
        for shown in (
            "Data drift on the test trips",
            "psi on psi:pickup_area: 0.41 against the threshold 0.25",
            "Pickups moved to another borough.",
            "Concept drift on the train trips",
            "page-hinkley on log_error: 12.5 against the threshold 10, over 1,850 trips "
            "(id0001000 to id0002849)",
            "Evidence: mean_log_error_after = 0.52 · mean_log_error_before = 0.31",
        ):
            expect(banner).to_contain_text(shown)
        expect(banner).not_to_contain_text("The retired model drifted.")
        expect(page.locator(".st-key-model-roles")).to_contain_text(
            f"Champion {CHAMPION} · challenger {CHALLENGER}", timeout=PAINT_TIMEOUT_MS
        )
        expect(
            page.get_by_text(
                f"train: RMSLE 0.390 (challenger {CHALLENGER}) vs 0.412 (champion {CHAMPION}) "
                "on the same 120 trips: the challenger leads"
            )
        ).to_be_visible(timeout=60_000)
        # The caption above can be drawn before the table below it catches up: wait for the
        # table's challenger columns.
        expect(
            page.locator(".st-key-model-comparison [role=columnheader]").filter(
                has_text="test · challenger"
            )
        ).to_be_attached(timeout=60_000)
        comparison = grid_texts(page, "model-comparison")
        headers = page.locator(".st-key-model-comparison [role=columnheader]").all_inner_texts()
        print(f"comparison: {headers} {comparison}")
        assert [h.strip() for h in headers][-4:] == [
            "train · champion",
            "train · challenger",
            "test · champion",
            "test · challenger",
        ]
        # Row by row: the figure, then train's champion and challenger, then test's.
        assert comparison[:5] == ["version", CHAMPION, CHALLENGER, CHAMPION, CHALLENGER]
        rmsle = comparison.index("RMSLE")
        assert comparison[rmsle : rmsle + 3] == ["RMSLE", "0.412", "0.390"]

        page.locator(".st-key-promotion-history [role=gridcell]").first.wait_for(
            state="attached", timeout=60_000
        )
        # The test source's figures, from before roles, are the champion's.
        champion = grid_texts(page, "champion-cumulative")
        print(f"champion: {champion}")
        assert {"train", "900", "test", "345", CHAMPION} <= set(champion)

        history = grid_texts(page, "promotion-history")
        print(f"history: {history}")
        # Newest first, whatever came before this test on the cluster.
        assert history.index("retrained on March") < history.index("the first model")
        assert "bo@host" in history

        page.locator(".st-key-model-events [role=gridcell]").first.wait_for(
            state="attached", timeout=60_000
        )
        model_events = grid_texts(page, "model-events")
        print(f"model events: {model_events}")
        # Newest first, the retired model's drift too, with the evidence.
        assert model_events.index("Retrained on the newest trips.") < model_events.index(
            "The retired model drifted."
        )
        assert "candidate_rmsle = 0.38 · champion_rmsle = 0.45" in model_events
        assert_no_exception(page)
        # What an operator sees on opening the page: the banner on top.
        screenshot(page, "dashboard-drift.png", full_page=False)
        page.set_viewport_size({"width": 1500, "height": 2600})  # the whole page, history too
        screenshot(page, "dashboard-models.png")
        page.close()
    finally:
        codes = stop_all([child])
    assert codes == {"dashboard": 0}, child.log_path.read_text()
