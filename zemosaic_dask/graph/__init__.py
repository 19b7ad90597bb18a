"""Builders of Dask graphs from plans. No numerics here, and nothing is computed."""

from .ingest import build_ingest_graph
from .mosaic_first import build_mosaic_first_graph

__all__ = ["build_ingest_graph", "build_mosaic_first_graph"]
