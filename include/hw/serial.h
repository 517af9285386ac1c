/*
 * 16550A UART (COM1 at 0x3f8) with an output-only character backend.
 * SerialRegs is the guest-visible register file, kept apart from the
 * backend so that migration can save and load it as is.
 */
#ifndef HW_SERIAL_H
#define HW_SERIAL_H

#include "qemu/osdep.h"
#include "qemu/thread.h"

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_IO_LEN    8

/* Register offsets */
#define UART_RBR 0  /* read, DLAB=0 */
#define UART_THR 0  /* write, DLAB=0 */
#define UART_DLL 0  /* DLAB=1 */
#define UART_IER 1  /* DLAB=0 */
#define UART_DLM 1  /* DLAB=1 */
#define UART_IIR 2  /* read */
#define UART_FCR 2  /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define UART_LCR_DLAB 0x80
#define UART_LSR_DR   0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_IER_THRI 0x02
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI   0x02
#define UART_IIR_FIFO   0xc0
#define UART_FCR_FIFO_ENABLE 0x01
#define UART_MCR_LOOP 0x10

typedef struct SerialRegs {
    uint8_t rbr;
    uint8_t thr;                /* last byte transmitted */
    uint8_t ier;
    uint8_t iir;
    uint8_t fcr;
    uint8_t lcr;
    uint8_t mcr;
    uint8_t lsr;
    uint8_t msr;
    uint8_t scr;
    uint8_t dll;
    uint8_t dlm;
    bool thr_ipending;          /* "THR empty" interrupt not yet read */
} SerialRegs;

typedef void (*SerialIrqFunc)(void *opaque, int level);

typedef struct SerialState {
    QemuMutex lock;       /* several vCPUs may write at once */
    SerialRegs regs;
    int out_fd;                 /* -1: output discarded */
    bool close_fd;
    bool present;               /* false for "none" */
    SerialIrqFunc set_irq;      /* optional */
    void *irq_opaque;
} SerialState;

/*
 * Open the backend named by spec: "file:PATH" (created/truncated),
 * "file-append:PATH" (a -chardev file with append=on), "stdio", "null" or
 * "none" (no device at all).  NULL means "null".
 */
bool serial_init(SerialState *s, const char *spec, GError **errp);
void serial_cleanup(SerialState *s);
/* Power-on register values; the backend stays. */
void serial_reset(SerialState *s);
void serial_set_irq(SerialState *s, SerialIrqFunc fn, void *opaque);

/* Guest accesses; offset is 0..7 from the base port. */
uint8_t serial_ioport_read(SerialState *s, uint16_t offset);
void serial_ioport_write(SerialState *s, uint16_t offset, uint8_t val);

#endif
