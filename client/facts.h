/* An error's detail object as facts a person reads: labels instead of keys,
 * addresses in hex, platform names, Device OS releases next to module
 * versions, expected next to actual. */
#pragma once

#include <jansson.h>
#include <stdio.h>

/* Longest value text one fact line shows (longer ones are cut with "..."). */
#define FACTS_VALUE_MAX 200
/* Entries of list-valued facts (usb_trace, candidates) shown before "(N more)". */
#define FACTS_LIST_MAX 6

/* Writes one "    label  value" line per fact to out, indented by indent spaces. */
void facts_print(FILE *out, const json_t *detail, int indent);
