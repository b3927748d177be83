"""The map as a deck.gl spec: the boroughs under three trip layers, a plain-text tooltip,
compact JSON; and the boroughs' GeoJSON it ships with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from taxi_dashboard.live_map import BOROUGHS_ASSET, boroughs, build_deck, legend_html
from taxi_dashboard.views import MapRows

BOROUGH_NAMES = {"Manhattan", "Bronx", "Brooklyn", "Queens", "Staten Island"}
# New York City's extent, with a little margin (longitude, latitude).
NYC_WEST, NYC_SOUTH, NYC_EAST, NYC_NORTH = -74.27, 40.48, -73.68, 40.93


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
        "GeoJsonLayer",
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


def test_the_boroughs_are_the_first_layer_so_they_lie_under_the_trips():
    spec = json.loads(build_deck(MapRows(in_progress=[row("running")], finished=[])).to_json())
    first = spec["layers"][0]
    assert (first["@@type"], first["id"]) == ("GeoJsonLayer", "boroughs")
    names = {f["properties"]["BoroName"] for f in first["data"]["features"]}
    assert names == BOROUGH_NAMES
    # Not pickable: hovering the land must not hide a trip's tooltip behind an empty one.
    assert not first.get("pickable", False)
    assert all(layer["pickable"] for layer in spec["layers"][1:])


def positions(geometry: dict[str, Any]) -> Iterator[list[float]]:
    assert geometry["type"] in ("Polygon", "MultiPolygon")
    polygons = geometry["coordinates"]
    for polygon in [polygons] if geometry["type"] == "Polygon" else polygons:
        for ring in polygon:
            assert len(ring) >= 4
            assert ring[0] == ring[-1]  # closed
            yield from ring


def test_the_geojson_has_the_five_boroughs_within_new_york():
    asset = resources.files("taxi_dashboard").joinpath("assets", BOROUGHS_ASSET)
    # Small: every map update sends it to every open tab.
    assert len(asset.read_bytes()) < 150_000
    collection = boroughs()
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert sorted(f["properties"]["BoroName"] for f in features) == sorted(BOROUGH_NAMES)
    for feature in features:
        points = list(positions(feature["geometry"]))
        assert len(points) > 100, feature["properties"]  # a shoreline, not a box
        for longitude, latitude in points:
            assert NYC_WEST < longitude < NYC_EAST
            assert NYC_SOUTH < latitude < NYC_NORTH
            assert (round(longitude, 5), round(latitude, 5)) == (longitude, latitude)
