"""The map as a deck.gl spec: three layers, a plain-text tooltip, compact JSON."""

from __future__ import annotations

import json

from taxi_dashboard.live_map import build_deck, legend_html
from taxi_dashboard.views import MapRows


def row(tip: str) -> dict:
    return {
        "pickup": [-73.98, 40.75],
        "dropoff": [-73.96, 40.77],
        "color": [1, 2, 3, 4],
        "tip": tip,
    }


def test_the_deck_draws_arcs_and_pickups_in_progress_and_dropoffs_finished():
    deck = build_deck(MapRows(in_progress=[row("running")], finished=[row("done"), row("done2")]))
    spec = json.loads(deck.to_json())
    layers = {layer["id"]: layer for layer in spec["layers"]}
    assert [layer["@@type"] for layer in spec["layers"]] == [
        "ArcLayer",
        "ScatterplotLayer",
        "ScatterplotLayer",
    ]
    assert [r["tip"] for r in layers["in-progress-arcs"]["data"]] == ["running"]
    assert [r["tip"] for r in layers["in-progress-pickups"]["data"]] == ["running"]
    assert [r["tip"] for r in layers["finished-dropoffs"]["data"]] == ["done", "done2"]
    assert layers["finished-dropoffs"]["getPosition"] == "@@=dropoff"
    assert spec["initialViewState"]["latitude"] > 40


def test_the_json_is_compact_and_the_tooltip_is_text_not_html():
    deck = build_deck(MapRows(in_progress=[row("<img src=x onerror=alert(1)>")], finished=[]))
    text = deck.to_json()
    assert "\n" not in text
    assert ": " not in text
    assert deck._tooltip == {"text": "{tip}"}


def test_the_legend_shows_both_scales():
    legend = legend_html()
    assert "predicted duration" in legend
    assert "|error|" in legend
    assert legend.count("&#9679;") == 8
