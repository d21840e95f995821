"""pymm.mm: a process address space, laid out as the kernel lays out mm/ (Linux 6.18).

:class:`MM` holds the state and the public methods (validate, call the
function that models the kernel's, check); the logic lives in one module per
kernel file, each function named after the kernel function it models and
taking the address space it works on, as the kernel's take ``mm`` or ``vma``:

============  ==============================================  ===========================================
module        kernel file                                     holds
============  ==============================================  ===========================================
mm_struct     include/linux/mm_types.h (struct mm_struct)     class MM: state, thin public methods
syscall       include/linux/syscalls.h                        _Errno, _u64, _syscall, check after a call
vma           mm/vma.c (+ mm/rmap.c anon_vma_prepare)         VmaTree, Vma, split/merge, copy_vma,
                                                              do_vmi_munmap, free_pgtables
mmap          mm/mmap.c, arch/x86/kernel/sys_x86_64.c         do_mmap, mmap_region, get_unmapped_area
mremap        mm/mremap.c                                     do_mremap, move_vma, move_page_tables glue
mprotect      mm/mprotect.c                                   do_mprotect_pkey, mprotect_fixup
madvise       mm/madvise.c                                    do_madvise, madvise_populate
mlock         mm/mlock.c                                      do_mlock, apply_vma_lock_flags, mlock_fixup
mseal         mm/mseal.c                                      do_mseal, can_modify_vma
rlimit        kernel/sys.c, mm/mmap.c                         do_prlimit, may_expand_vm, mlock_future_ok
memory        mm/memory.c, mm/gup.c, arch/x86/mm/fault.c      faults, mm_populate, expand_downwards, CPU
exec          mm/vma_exec.c, fs/exec.c                        create_init_stack_vma, relocate_vma_down
task_mmu      fs/proc/task_mmu.c                              maps text, status, pagemap
============  ==============================================  ===========================================

The page tables and every loop over pages are :mod:`mmcore`'s.

Example::

    >>> from pymm.mm import MM
    >>> MM().mmap(0, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS) > 0
    True
"""
from pymm.mm.mm_struct import MM
from pymm.mm.vma import VMA

__all__ = ["MM", "VMA"]
