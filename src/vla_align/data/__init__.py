"""Episodes, the LeRobot v3.0 on-disk format, simulators' demonstration generators, windowing."""
