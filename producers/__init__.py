"""Where frames come from: the sensor SDK, dataset replay and synthetic parts."""
