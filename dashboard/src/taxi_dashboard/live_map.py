"""The live New York map as a pydeck Deck (pure: building it draws nothing).

Under the trips, the five boroughs' shorelines (assets/README.md), so that the map reads as New
York even when Carto's tiles cannot be fetched (offline). Trips in progress: an arc from pickup to
dropoff and a dot at the pickup, coloured by predicted duration. Finished trips: a dot at the
dropoff coloured by the prediction's error, fading out.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

from taxi_dashboard.views import DURATION_STOPS, ERROR_STOPS, TOOLTIP, MapRows, format_duration

NEW_YORK = pdk.ViewState(latitude=40.735, longitude=-73.93, zoom=10.2, pitch=40, bearing=0)
BOROUGHS_ASSET = "nyc_boroughs.geojson"
# Translucent, so that Carto's streets and labels still show through when the tiles load.
LAND_FILL: list[int] = [222, 212, 190, 150]
SHORE_LINE: list[int] = [150, 140, 120, 200]


@functools.cache
def boroughs() -> dict[str, Any]:
    """The boroughs' GeoJSON, read once from the installed package."""
    asset = resources.files("taxi_dashboard").joinpath("assets", BOROUGHS_ASSET)
    geojson: dict[str, Any] = json.loads(asset.read_text(encoding="utf-8"))
    return geojson


class CompactDeck(pdk.Deck):  # type: ignore[misc]  # pydeck ships no types: pdk.Deck is Any
    """A Deck whose JSON has no indentation: pydeck indents by 2, which doubles the size of
    what every open tab receives on every update."""

    def to_json(self) -> str:
        return json.dumps(self, sort_keys=True, default=default_serialize, separators=(",", ":"))


def build_deck(rows: MapRows) -> CompactDeck:
    layers = [
        # First, so that deck.gl draws it under the trips; not pickable, so that hovering the
        # land shows no tooltip.
        pdk.Layer(
            "GeoJsonLayer",
            id="boroughs",
            data=boroughs(),
            filled=True,
            stroked=True,
            get_fill_color=LAND_FILL,
            get_line_color=SHORE_LINE,
            line_width_min_pixels=1,
        ),
        pdk.Layer(
            "ArcLayer",
            id="in-progress-arcs",
            data=rows.in_progress,
            get_source_position="pickup",
            get_target_position="dropoff",
            get_source_color="color",
            get_target_color="color",
            get_width=2,
            pickable=True,
            auto_highlight=True,
        ),
        pdk.Layer(
            "ScatterplotLayer",
            id="in-progress-pickups",
            data=rows.in_progress,
            get_position="pickup",
            get_fill_color="color",
            get_radius=60,
            radius_min_pixels=2,
            pickable=True,
        ),
        pdk.Layer(
            "ScatterplotLayer",
            id="finished-dropoffs",
            data=rows.finished,
            get_position="dropoff",
            get_fill_color="color",
            get_radius=90,
            radius_min_pixels=3,
            pickable=True,
        ),
    ]
    # map_style None: Streamlit picks the base map matching its light or dark theme.
    return CompactDeck(layers=layers, initial_view_state=NEW_YORK, tooltip=TOOLTIP, map_style=None)


def _swatch(colour: tuple[int, int, int], label: str) -> str:
    r, g, b = colour
    return f"<span style='color: rgb({r},{g},{b})'>&#9679;</span> {label}"


def legend_html() -> str:
    """A one-line legend of both colour scales (fixed text, no data from Kafka)."""
    durations = " ".join(_swatch(c, format_duration(s)) for s, c in DURATION_STOPS)
    errors = " ".join(_swatch(c, f"{e:.0%}") for e, c in ERROR_STOPS)
    return (
        f"In progress (arc and pickup), predicted duration: {durations}"
        f" &nbsp;|&nbsp; Finished (dropoff, fading), |error|: {errors}"
    )
