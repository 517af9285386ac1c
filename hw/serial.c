/*
 * 16550A UART model.  Transmission is instantaneous: a byte written to THR
 * goes straight to the backend, so LSR always shows the transmitter empty.
 * There is no input: RBR reads 0 and LSR never shows data ready.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "hw/serial.h"
#include <fcntl.h>

static void serial_update_irq(SerialState *s)
{
    SerialRegs *r = &s->regs;
    bool thri = r->thr_ipending && (r->ier & UART_IER_THRI);

    r->iir = (r->iir & UART_IIR_FIFO) | (thri ? UART_IIR_THRI
                                               : UART_IIR_NO_INT);
    /* The PC wires the line through OUT2, as real COM ports do. */
    if (s->set_irq) {
        s->set_irq(s->irq_opaque, thri && (r->mcr & 0x08));
    }
}

static void serial_emit(SerialState *s, uint8_t ch)
{
    ssize_t n;

    if (s->out_fd < 0) {
        return;
    }
    /* Unbuffered on purpose: tests watch the file while the guest runs. */
    do {
        n = write(s->out_fd, &ch, 1);
    } while (n < 0 && errno == EINTR);
}

static bool serial_open_backend(SerialState *s, const char *spec,
                                GError **errp)
{
    s->out_fd = -1;
    s->close_fd = false;
    s->present = true;
    if (!spec || !strcmp(spec, "null")) {
        return true;
    }
    if (!strcmp(spec, "none")) {
        s->present = false;
        return true;
    }
    if (!strcmp(spec, "stdio")) {
        s->out_fd = STDOUT_FILENO;
        return true;
    }
    if ((g_str_has_prefix(spec, "file:") && spec[5]) ||
        (g_str_has_prefix(spec, "file-append:") && spec[12])) {
        bool append = spec[4] == '-';
        const char *path = append ? spec + 12 : spec + 5;

        s->out_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC |
                         (append ? O_APPEND : O_TRUNC), 0644);
        if (s->out_fd < 0) {
            error_setg_errno(errp, errno, "-serial %s: cannot open '%s'",
                             spec, path);
            return false;
        }
        s->close_fd = true;
        return true;
    }
    error_setg(errp, "-serial %s: unsupported backend (use file:PATH, "
               "stdio, null or none)", spec);
    return false;
}

bool serial_init(SerialState *s, const char *spec, GError **errp)
{
    memset(s, 0, sizeof(*s));
    qemu_mutex_init(&s->lock);
    if (!serial_open_backend(s, spec, errp)) {
        qemu_mutex_destroy(&s->lock);
        return false;
    }
    serial_reset(s);
    return true;
}

void serial_cleanup(SerialState *s)
{
    if (s->close_fd) {
        close(s->out_fd);
    }
    s->out_fd = -1;
    s->close_fd = false;
    qemu_mutex_destroy(&s->lock);
}

void serial_set_irq(SerialState *s, SerialIrqFunc fn, void *opaque)
{
    qemu_mutex_lock(&s->lock);
    s->set_irq = fn;
    s->irq_opaque = opaque;
    qemu_mutex_unlock(&s->lock);
}

void serial_reset(SerialState *s)
{
    qemu_mutex_lock(&s->lock);
    s->regs = (SerialRegs) {
        .iir = UART_IIR_NO_INT,
        .lsr = UART_LSR_THRE | UART_LSR_TEMT,
        .msr = 0xb0,            /* DCD, DSR, CTS: a cable is attached */
        .dll = 0x0c,            /* 9600 baud */
    };
    serial_update_irq(s);
    qemu_mutex_unlock(&s->lock);
}

static uint8_t serial_read_iir(SerialState *s)
{
    uint8_t v = s->regs.iir;

    /* Reading IIR acknowledges a THR-empty interrupt. */
    if ((v & 0x0f) == UART_IIR_THRI) {
        s->regs.thr_ipending = false;
        serial_update_irq(s);
    }
    return v;
}

static uint8_t serial_read_locked(SerialState *s, uint16_t offset)
{
    SerialRegs *r = &s->regs;
    bool dlab = r->lcr & UART_LCR_DLAB;

    switch (offset) {
    case UART_RBR:
        return dlab ? r->dll : r->rbr;
    case UART_IER:
        return dlab ? r->dlm : r->ier;
    case UART_IIR:
        return serial_read_iir(s);
    case UART_LCR:
        return r->lcr;
    case UART_MCR:
        return r->mcr;
    case UART_LSR:
        return r->lsr;
    case UART_MSR:
        if (r->mcr & UART_MCR_LOOP) {
            /* Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
            return ((r->mcr & 0x01) << 5) | ((r->mcr & 0x02) << 3) |
                   ((r->mcr & 0x04) << 4) | ((r->mcr & 0x08) << 4);
        }
        return r->msr;
    case UART_SCR:
        return r->scr;
    default:
        return 0xff;
    }
}

static void serial_write_thr(SerialState *s, uint8_t val)
{
    s->regs.thr = val;
    if (!(s->regs.mcr & UART_MCR_LOOP)) {
        serial_emit(s, val);
    }
    /* The byte left at once: THR is empty again. */
    s->regs.thr_ipending = true;
    serial_update_irq(s);
}

static void serial_write_locked(SerialState *s, uint16_t offset, uint8_t val)
{
    SerialRegs *r = &s->regs;
    bool dlab = r->lcr & UART_LCR_DLAB;

    switch (offset) {
    case UART_THR:
        if (dlab) {
            r->dll = val;
        } else {
            serial_write_thr(s, val);
        }
        break;
    case UART_IER:
        if (dlab) {
            r->dlm = val;
            break;
        }
        /* Enabling the THR interrupt with THR empty raises it at once. */
        if ((val & UART_IER_THRI) && !(r->ier & UART_IER_THRI)) {
            r->thr_ipending = true;
        }
        r->ier = val & 0x0f;
        serial_update_irq(s);
        break;
    case UART_FCR:
        r->fcr = val & 0xc9;    /* reset bits 1-2 self-clear */
        r->iir = (r->iir & 0x0f) |
                 ((val & UART_FCR_FIFO_ENABLE) ? UART_IIR_FIFO : 0);
        break;
    case UART_LCR:
        r->lcr = val;
        break;
    case UART_MCR:
        r->mcr = val & 0x1f;
        serial_update_irq(s);
        break;
    case UART_SCR:
        r->scr = val;
        break;
    default:                    /* LSR, MSR: read-only here */
        break;
    }
}

uint8_t serial_ioport_read(SerialState *s, uint16_t offset)
{
    uint8_t v;

    qemu_mutex_lock(&s->lock);
    v = serial_read_locked(s, offset);
    qemu_mutex_unlock(&s->lock);
    return v;
}

void serial_ioport_write(SerialState *s, uint16_t offset, uint8_t val)
{
    qemu_mutex_lock(&s->lock);
    serial_write_locked(s, offset, val);
    qemu_mutex_unlock(&s->lock);
}
