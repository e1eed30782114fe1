"""The stream-processing runtime: consume, micro-batch, score, write Redis, alert."""
