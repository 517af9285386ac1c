/*
 * 16550 UART model: registers and the file backend.
 */
#include "qemu/osdep.h"
#include "hw/serial.h"
#include <glib/gstdio.h>

typedef struct IrqLog {
    int level;
    int changes;
} IrqLog;

static void irq_cb(void *opaque, int level)
{
    IrqLog *log = opaque;

    if (log->level != level) {
        log->changes++;
    }
    log->level = level;
}

static void test_registers(void)
{
    SerialState s;
    GError *err = NULL;

    g_assert_true(serial_init(&s, "null", &err));
    g_assert_no_error(err);
    g_assert_true(s.present);
    /* Transmitter always empty */
    g_assert_cmphex(serial_ioport_read(&s, UART_LSR), ==,
                    UART_LSR_THRE | UART_LSR_TEMT);
    g_assert_cmphex(serial_ioport_read(&s, UART_IIR), ==, UART_IIR_NO_INT);

    /* Scratch register keeps what was written */
    serial_ioport_write(&s, UART_SCR, 0x5a);
    g_assert_cmphex(serial_ioport_read(&s, UART_SCR), ==, 0x5a);

    /* DLAB switches offsets 0/1 to the divisor latch */
    serial_ioport_write(&s, UART_IER, 0x0f);
    serial_ioport_write(&s, UART_LCR, UART_LCR_DLAB | 0x03);
    serial_ioport_write(&s, UART_DLL, 0x01);
    serial_ioport_write(&s, UART_DLM, 0x02);
    g_assert_cmphex(serial_ioport_read(&s, UART_DLL), ==, 0x01);
    g_assert_cmphex(serial_ioport_read(&s, UART_DLM), ==, 0x02);
    g_assert_cmphex(s.regs.ier, ==, 0x0f);      /* untouched by DLM write */
    serial_ioport_write(&s, UART_LCR, 0x03);
    g_assert_cmphex(serial_ioport_read(&s, UART_LCR), ==, 0x03);
    g_assert_cmphex(serial_ioport_read(&s, UART_IER), ==, 0x0f);
    g_assert_cmphex(s.regs.dll, ==, 0x01);

    /* IER keeps only its 4 defined bits */
    serial_ioport_write(&s, UART_IER, 0xf0);
    g_assert_cmphex(serial_ioport_read(&s, UART_IER), ==, 0x00);

    /* FIFO enable shows in IIR's top bits */
    serial_ioport_write(&s, UART_FCR, UART_FCR_FIFO_ENABLE);
    g_assert_cmphex(serial_ioport_read(&s, UART_IIR), ==,
                    UART_IIR_FIFO | UART_IIR_NO_INT);

    /* MCR loopback reflects modem control into MSR */
    serial_ioport_write(&s, UART_MCR, UART_MCR_LOOP | 0x03);
    g_assert_cmphex(serial_ioport_read(&s, UART_MSR), ==, 0x30);
    serial_ioport_write(&s, UART_MCR, 0);
    g_assert_cmphex(serial_ioport_read(&s, UART_MSR), ==, 0xb0);

    /* LSR is read-only */
    serial_ioport_write(&s, UART_LSR, 0);
    g_assert_cmphex(serial_ioport_read(&s, UART_LSR), ==, 0x60);

    serial_reset(&s);
    g_assert_cmphex(serial_ioport_read(&s, UART_SCR), ==, 0);
    g_assert_cmphex(serial_ioport_read(&s, UART_LCR), ==, 0);
    serial_cleanup(&s);
}

static void test_thr_interrupt(void)
{
    SerialState s;
    IrqLog log = { 0 };

    g_assert_true(serial_init(&s, NULL, NULL));
    serial_set_irq(&s, irq_cb, &log);
    serial_ioport_write(&s, UART_MCR, 0x08);            /* OUT2 */
    serial_ioport_write(&s, UART_IER, UART_IER_THRI);
    g_assert_cmpint(log.level, ==, 1);
    g_assert_cmphex(serial_ioport_read(&s, UART_IIR), ==, UART_IIR_THRI);
    /* Reading IIR acknowledged it */
    g_assert_cmpint(log.level, ==, 0);
    g_assert_cmphex(serial_ioport_read(&s, UART_IIR), ==, UART_IIR_NO_INT);
    serial_ioport_write(&s, UART_THR, 'x');
    g_assert_cmpint(log.level, ==, 1);
    serial_ioport_write(&s, UART_IER, 0);
    g_assert_cmpint(log.level, ==, 0);
    serial_cleanup(&s);
}

typedef struct Writer {
    SerialState *s;
    char ch;
} Writer;

static void *writer_thread(void *opaque)
{
    Writer *w = opaque;

    for (int i = 0; i < 1000; i++) {
        serial_ioport_write(w->s, UART_THR, w->ch);
    }
    return NULL;
}

static void test_file_backend(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-serial-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "out.txt", NULL);
    g_autofree char *spec = g_strdup_printf("file:%s", path);
    g_autofree char *data = NULL;
    SerialState s;
    pthread_t th[2];
    Writer w[2];
    gsize len = 0;
    int count[2] = { 0, 0 };

    g_assert_true(g_file_set_contents(path, "old contents", -1, NULL));
    g_assert_true(serial_init(&s, spec, NULL));
    serial_ioport_write(&s, UART_THR, 'h');
    serial_ioport_write(&s, UART_THR, 'i');
    /* Unbuffered: visible immediately, old contents truncated */
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpstr(data, ==, "hi");
    g_free(g_steal_pointer(&data));

    /* In DLAB mode offset 0 is the divisor: nothing is sent */
    serial_ioport_write(&s, UART_LCR, UART_LCR_DLAB);
    serial_ioport_write(&s, UART_THR, 'X');
    serial_ioport_write(&s, UART_LCR, 0);

    for (int i = 0; i < 2; i++) {
        w[i] = (Writer) { &s, (char)('0' + i) };
        pthread_create(&th[i], NULL, writer_thread, &w[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(len, ==, 2002);
    for (gsize i = 2; i < len; i++) {
        g_assert_true(data[i] == '0' || data[i] == '1');
        count[data[i] - '0']++;
    }
    g_assert_cmpint(count[0], ==, 1000);
    g_assert_cmpint(count[1], ==, 1000);
    serial_cleanup(&s);
    g_unlink(path);
    g_rmdir(dir);
}

/* -chardev file,append=on: a migration's destination on the same host
 * must not wipe what the source wrote. */
static void test_file_append(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-serial-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "out.txt", NULL);
    g_autofree char *spec = g_strdup_printf("file-append:%s", path);
    g_autofree char *data = NULL;
    SerialState s;

    g_assert_true(g_file_set_contents(path, "old ", -1, NULL));
    g_assert_true(serial_init(&s, spec, NULL));
    serial_ioport_write(&s, UART_THR, 'n');
    g_assert_true(g_file_get_contents(path, &data, NULL, NULL));
    g_assert_cmpstr(data, ==, "old n");
    serial_cleanup(&s);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_backend_specs(void)
{
    SerialState s;
    GError *err = NULL;

    g_assert_true(serial_init(&s, "none", &err));
    g_assert_false(s.present);
    serial_cleanup(&s);
    g_assert_true(serial_init(&s, "stdio", &err));
    g_assert_cmpint(s.out_fd, ==, STDOUT_FILENO);
    serial_cleanup(&s);

    g_assert_false(serial_init(&s, "vc", &err));
    g_assert_nonnull(strstr(err->message, "vc"));
    g_clear_error(&err);
    g_assert_false(serial_init(&s, "file:", &err));
    g_clear_error(&err);
    g_assert_false(serial_init(&s, "file:/nonexistent/dir/x", &err));
    g_assert_nonnull(strstr(err->message, "/nonexistent/dir/x"));
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/serial/registers", test_registers);
    g_test_add_func("/serial/file-append", test_file_append);
    g_test_add_func("/serial/thr-interrupt", test_thr_interrupt);
    g_test_add_func("/serial/file-backend", test_file_backend);
    g_test_add_func("/serial/backend-specs", test_backend_specs);
    return g_test_run();
}
