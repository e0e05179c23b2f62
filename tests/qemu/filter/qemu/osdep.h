/*
 * What migration/switchover-bw.c takes from QEMU's osdep.h, for building
 * it alone (tests/qemu/filter/replay.c): the C library only.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
