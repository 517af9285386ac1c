/*
 * Character devices (-chardev): the back ends that the QMP monitor and the
 * UART sit on.  Only what a VMM driven by libvirt needs: a listening unix
 * socket (by path or inherited descriptor), a file, stdio and null.
 */
#ifndef CHARDEV_CHAR_H
#define CHARDEV_CHAR_H

#include "qemu/osdep.h"

typedef enum ChardevKind {
    CHARDEV_SOCKET,
    CHARDEV_FILE,
    CHARDEV_STDIO,
    CHARDEV_NULL,
} ChardevKind;

typedef struct Chardev {
    char *id;
    ChardevKind kind;
    char *path;             /* socket path= or file path=; NULL for fd= */
    int fd;                 /* socket fd= (inherited, listening); else -1 */
    bool append;            /* file append=on */
    const char *frontend;   /* "monitor", "serial"; NULL while unused */
} Chardev;

/* The -chardev list of the running VM (set once at start-up). */
extern GPtrArray *qemu_chardevs;

void chardev_free(gpointer p);
/* What query-chardev reports as "filename", QEMU's spelling. */
char *chardev_filename(const Chardev *c);
/* The QMP server spec for a socket chardev used by -mon mode=control. */
char *chardev_qmp_spec(const Chardev *c);
/* The serial back end spec (see hw/serial.h) for a chardev, or NULL. */
char *chardev_serial_spec(const Chardev *c, GError **errp);
void chardev_register_qmp(void);

#endif
