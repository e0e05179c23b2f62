"""miglab: a live-migration lab for QEMU's switchover bandwidth decision."""
