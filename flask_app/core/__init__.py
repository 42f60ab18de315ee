"""The prebooking itself: its state machine, the atomic claim and execution, its persistence."""
