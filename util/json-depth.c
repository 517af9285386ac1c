/*
 * A nesting check to run before json-glib, which parses by recursion
 * without a depth limit: text from outside must not choose how deep the
 * stack goes.
 */
#include "qemu/osdep.h"
#include "qemu/json-depth.h"

/*
 * Where text nests deeper than max, or -1.  The scan follows json-glib's
 * lexer rather than strict JSON, so that it never sees less nesting than
 * the parser will: "..." strings with backslash escapes, '...' strings
 * without, comments from slash-star to star-slash, and json-glib's
 * single-line comments, which run from one '/' to the next.  Where the
 * two disagree on what is well-formed, json-glib stops with an error and
 * recurses no further, so counting past that point is merely cautious.
 */
ssize_t json_too_deep(const char *text, size_t len, unsigned max)
{
    unsigned depth = 0;
    const char *end;

    for (size_t i = 0; i < len; i++) {
        switch (text[i]) {
        case '"':
            for (i++; i < len && text[i] != '"'; i++) {
                if (text[i] == '\\') {
                    i++;
                }
            }
            break;
        case '\'':
            end = memchr(text + i + 1, '\'', len - i - 1);
            i = end ? (size_t)(end - text) : len;
            break;
        case '/':
            if (i + 1 < len && text[i + 1] == '*') {
                /* not g_strstr_len(): that one stops at a NUL */
                for (i += 2; i < len; i++) {
                    if (text[i] == '/' && text[i - 1] == '*' &&
                        text[i - 2] != '/') {
                        break;
                    }
                }
            } else {
                end = memchr(text + i + 1, '/', len - i - 1);
                i = end ? (size_t)(end - text) : len;
            }
            break;
        case '[':
        case '{':
            if (++depth > max) {
                return i;
            }
            break;
        case ']':
        case '}':
            if (depth) {
                depth--;
            }
            break;
        }
    }
    return -1;
}
