"""photo-gateway: the running DICOM node (ingest, staging, routing, delivery, purge)."""

__version__ = "0.1.0"
