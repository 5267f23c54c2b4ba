"""Apache Beam jobs built on `features`."""
