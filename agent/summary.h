/* summary: the "top functions" table printed after a recording.
 *
 * Contract: reads an aggregate, never changes it. Self time is the time a function was the leaf;
 * total time counts each stack once per function even under recursion. Functions are (name,
 * file): the lines of one function are merged.
 */
#ifndef CONPROF_AGENT_SUMMARY_H
#define CONPROF_AGENT_SUMMARY_H

#include "aggregate.h"

#include <stdio.h>

int summary_print_top(FILE *out, const struct agg *a, enum agg_dimension dim, int n);

#endif
