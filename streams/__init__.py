"""journey-streams: streaming clickstream processing for online stores."""

__version__ = "0.1.0"
