/*
 * RCU comes from liburcu (memb flavour).  Readers: rcu_read_lock() /
 * rcu_read_unlock(); writers publish with rcu_assign_pointer() and free
 * with call_rcu() or after synchronize_rcu().  Threads not created through
 * qemu_thread_create must call rcu_register_thread() themselves.
 */
#ifndef QEMU_RCU_H
#define QEMU_RCU_H

#include <urcu.h>
#include <urcu/rculist.h>
#include <urcu/list.h>

#define RCU_READ_LOCK_GUARD() \
    g_autoptr(RcuReadGuard) _rcu_guard G_GNUC_UNUSED = rcu_read_guard_lock()

typedef struct RcuReadGuard RcuReadGuard;
static inline RcuReadGuard *rcu_read_guard_lock(void)
{
    rcu_read_lock();
    return (RcuReadGuard *)1;
}
static inline void rcu_read_guard_unlock(RcuReadGuard *g)
{
    rcu_read_unlock();
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RcuReadGuard, rcu_read_guard_unlock)

#endif
