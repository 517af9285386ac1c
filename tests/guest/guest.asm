; Ferry test guest: a Multiboot v1 flat image that enters long mode, starts
; the other vCPUs with INIT/SIPI and lets every vCPU sweep its own slice of
; RAM from ring 3.  The layout, parameters and the exact page pattern are
; described in README.md; tests/guest/ramcheck.c checks dumps against them.
;
; Kernel-mode code is emulated instruction by instruction on the hosts we
; run on, so everything that can be a table (GDT, TSSs, IDT, page tables)
; is assembled statically and the set-up path is kept to a few hundred
; instructions.  Only the ring-3 sweep loop is hot.

bits 32
org 0x100000

LOAD_ADDR       equ 0x100000
MAX_CPUS        equ 64
STACK_SIZE      equ 4096
TRAMP_ADDR      equ 0x8000          ; SIPI vector 0x08
DEFAULT_START   equ 0x400000
END_CAP         equ 0xC0000000      ; never sweep above 3 GiB
SEED_MULT       equ 0x9E3779B97F4A7C15

MB_MAGIC        equ 0x1BADB002
MB_FLAGS        equ 0x00010002      ; memory info + address fields
MB_BOOT_MAGIC   equ 0x2BADB002

SEL_KCODE64     equ 0x08
SEL_KDATA       equ 0x10
SEL_UCODE64     equ 0x18 | 3
SEL_UDATA       equ 0x20 | 3
SEL_KCODE32     equ 0x28
SEL_TSS0        equ 0x30

COM1            equ 0x3f8
LAPIC           equ 0xFEE00000
CHECKIN_CLOSED  equ 0x80000000

; Physical address of a label (the image is linked and loaded at LOAD_ADDR);
; needed wherever a table splits an address into bit fields.
%define PA(x) ((x) - $$ + LOAD_ADDR)

; --------------------------------------------------------------------------
; Multiboot v1 header with the address fields, so no ELF is needed.
align 4
mb_header:
    dd MB_MAGIC
    dd MB_FLAGS
    dd -(MB_MAGIC + MB_FLAGS)
    dd PA(mb_header)                ; header_addr
    dd LOAD_ADDR                    ; load_addr
    dd PA(image_end)                ; load_end_addr
    dd bss_end                      ; bss_end_addr
    dd PA(bsp_entry32)              ; entry_addr

; --------------------------------------------------------------------------
; 32-bit entry: EAX = boot magic, EBX = multiboot info, paging off.
bsp_entry32:
    cli
    cld
    mov [mb_magic_seen], eax
    mov [mb_info], ebx
    lgdt [gdtr]
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov edi, bsp_long
    jmp long_mode_on

; APs arrive here from the trampoline, in protected mode with our GDT.
ap_entry32:
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov edi, ap_long
    ; fall through

; Shared by BSP and APs: PAE + LME + paging, then a far jump into 64-bit
; code.  EDI = 64-bit entry point.
long_mode_on:
    mov eax, cr4
    or eax, 1 << 5                  ; PAE
    mov cr4, eax
    mov eax, pml4
    mov cr3, eax
    mov ecx, 0xC0000080             ; EFER
    rdmsr
    or eax, 1 << 8                  ; LME
    wrmsr
    mov eax, cr0
    and eax, 0x9FFFFFFF             ; APs come out of reset with CD/NW set
    or eax, 0x80000001              ; PG | PE
    mov cr0, eax
    jmp SEL_KCODE64:long_dispatch

bits 64
default rel

long_dispatch:
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov edi, edi
    jmp rdi

; --------------------------------------------------------------------------
; BSP in long mode.
bsp_long:
    mov esp, kstacks + STACK_SIZE   ; slot 0
    lidt [idtr]
    mov ax, SEL_TSS0
    ltr ax

    call parse_boot_info
    call start_aps
    call print_params

    mov byte [go], 1                ; params are final: release the APs
    xor edi, edi                    ; cpu 0
    xor esi, esi                    ; slot 0
    jmp enter_user

; Read the multiboot info: cmdline keys, then defaults and clamping.
parse_boot_info:
    mov rbx, 0
    cmp dword [mb_magic_seen], MB_BOOT_MAGIC
    jne .no_info
    mov ebx, [mb_info]
    test byte [rbx], 1 << 2         ; cmdline present?
    jz .no_cmdline
    mov esi, [rbx + 16]
    push rbx
    call parse_cmdline
    pop rbx
.no_cmdline:
    test byte [rbx], 1 << 0         ; mem_lower/mem_upper present?
    jz .no_info
    mov eax, [rbx + 8]              ; mem_upper in KiB above 1 MiB
    shl rax, 10
    add rax, 0x100000
    mov [ram_end], rax
.no_info:
    ; ncpus in [1, MAX_CPUS]
    mov rax, [p_ncpus]
    test rax, rax
    jnz .n1
    mov eax, 1
.n1:
    cmp rax, MAX_CPUS
    jbe .n2
    mov eax, MAX_CPUS
.n2:
    mov [p_ncpus], rax
    ; start: page aligned, above everything we own
    mov rax, [p_start]
    add rax, 4095
    and rax, ~4095
    cmp rax, min_start
    jae .s1
    mov eax, min_start
.s1:
    mov [p_start], rax
    ; end: default and cap are the end of RAM, and never above 3 GiB
    mov rax, [p_end]
    mov rcx, [ram_end]
    test rcx, rcx
    jz .e1
    test rax, rax
    jz .e0
    cmp rax, rcx
    jbe .e1
.e0:
    mov rax, rcx
.e1:
    mov rcx, END_CAP
    cmp rax, rcx
    jbe .e2
    mov rax, rcx
.e2:
    and rax, ~4095
    mov [p_end], rax
    cmp rax, [p_start]
    ja .e3
    lea rsi, [msg_empty]
    call puts
    jmp halt_forever
.e3:
    mov eax, [p_seed]               ; seed is 32 bits
    mov [p_seed], rax
    mov rcx, SEED_MULT
    imul rax, rcx
    mov [p_mix], rax
    cmp byte [bad_value], 0
    je .ret
    lea rsi, [msg_bad]
    call puts
.ret:
    ret

; RSI = NUL-terminated cmdline: space-separated key=value tokens.
parse_cmdline:
.next_token:
    mov al, [rsi]
    test al, al
    jz .done
    cmp al, ' '
    jne .token
    inc rsi
    jmp .next_token
.token:
    lea rbx, [key_table]
.try_key:
    mov rdi, [rbx]
    test rdi, rdi
    jz .skip_token
    mov rcx, rsi
.cmp:
    mov al, [rdi]
    test al, al
    jz .matched
    cmp al, [rcx]
    jne .next_key
    inc rdi
    inc rcx
    jmp .cmp
.next_key:
    add rbx, 16
    jmp .try_key
.matched:
    mov rsi, rcx
    call parse_num
    jc .bad
    mov rdi, [rbx + 8]
    mov [rdi], rax
    jmp .next_token
.bad:
    mov byte [bad_value], 1
    jmp .next_token
.skip_token:
    mov al, [rsi]
    test al, al
    jz .done
    cmp al, ' '
    je .next_token
    inc rsi
    jmp .skip_token
.done:
    ret

; RSI -> decimal or 0x-hex digits ended by space/NUL.  Returns RAX, RSI at
; the end of the token; CF set on an empty or malformed number.
parse_num:
    xor eax, eax
    xor ecx, ecx
    cmp byte [rsi], '0'
    jne .dec
    mov dl, [rsi + 1]
    or dl, 0x20
    cmp dl, 'x'
    jne .dec
    add rsi, 2
.hex:
    movzx edx, byte [rsi]
    test dl, dl
    jz .end
    cmp dl, ' '
    je .end
    sub edx, '0'
    cmp edx, 9
    jbe .hex_add
    add edx, '0'
    or edx, 0x20
    sub edx, 'a'
    cmp edx, 5
    ja .err
    add edx, 10
.hex_add:
    shl rax, 4
    add rax, rdx
    inc rsi
    inc ecx
    jmp .hex
.dec:
    movzx edx, byte [rsi]
    test dl, dl
    jz .end
    cmp dl, ' '
    je .end
    sub edx, '0'
    cmp edx, 9
    ja .err
    imul rax, rax, 10
    add rax, rdx
    inc rsi
    inc ecx
    jmp .dec
.end:
    test ecx, ecx
    jz .err_end
    clc
    ret
.err:                               ; skip the rest of the token
    mov dl, [rsi]
    test dl, dl
    jz .err_end
    cmp dl, ' '
    je .err_end
    inc rsi
    jmp .err
.err_end:
    stc
    ret

; Copy the trampoline low, INIT + SIPI + SIPI to all but self, then wait
; (bounded by the TSC) for ncpus-1 APs to check in.
start_aps:
    cmp qword [p_ncpus], 1
    je .ret
    lea rsi, [tramp_start]
    mov edi, TRAMP_ADDR
    mov ecx, tramp_end - tramp_start
    rep movsb
    mov ebx, LAPIC
    mov dword [rbx + 0xF0], 0x1FF   ; software-enable the local APIC
    mov dword [rbx + 0x310], 0
    mov dword [rbx + 0x300], 0x000C4500     ; INIT, all excluding self
    call icr_wait
    mov rcx, 20000000               ; ~10 ms
    call tsc_wait
    mov dword [rbx + 0x300], 0x000C4600 | (TRAMP_ADDR >> 12)
    call icr_wait
    mov rcx, 1000000
    call tsc_wait
    mov dword [rbx + 0x300], 0x000C4600 | (TRAMP_ADDR >> 12)
    call icr_wait

    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r8, rax                     ; deadline start
    mov r9, [p_ncpus]
    dec r9                          ; APs wanted
.wait:
    pause
    mov eax, [checkin]
    cmp rax, r9
    jae .close
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r8
    mov rcx, 1 << 33                ; a few seconds
    cmp rax, rcx
    jb .wait
.close:
    ; Late APs must not join with a slice nobody accounted for: closing
    ; and reading the count is one atomic step.
    mov eax, CHECKIN_CLOSED
    lock xadd [checkin], eax
    cmp rax, r9
    jae .ret
    mov rbx, rax                    ; fewer APs came up than asked for
    lea rsi, [msg_few]
    call puts
    mov rax, rbx
    call put_dec
    lea rsi, [msg_few2]
    call puts
    mov rax, r9
    call put_dec
    lea rsi, [msg_few3]
    call puts
    inc rbx
    mov [p_ncpus], rbx
.ret:
    ret

icr_wait:                           ; until delivery status is idle
    mov ecx, 100000
.l:
    test dword [rbx + 0x300], 1 << 12
    jz .ret
    pause
    dec ecx
    jnz .l
.ret:
    ret

tsc_wait:                           ; RCX = TSC ticks
    push rbx
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rbx, rax
.l:
    pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, rbx
    cmp rax, rcx
    jb .l
    pop rbx
    ret

print_params:
    lea rsi, [msg_ncpus]
    call puts
    mov rax, [p_ncpus]
    call put_dec
    lea rsi, [msg_start]
    call puts
    mov rax, [p_start]
    call put_hex
    lea rsi, [msg_end]
    call puts
    mov rax, [p_end]
    call put_hex
    lea rsi, [msg_seed]
    call puts
    mov rax, [p_seed]
    call put_hex
    lea rsi, [msg_delay]
    call puts
    mov rax, [p_delay]
    call put_dec
    lea rsi, [msg_sweeps]
    call puts
    mov rax, [p_sweeps]
    call put_dec
    mov al, 10
    jmp putc

putc:                               ; AL
    push rdx
    mov dx, COM1
    out dx, al
    pop rdx
    ret

puts:                               ; RSI = NUL-terminated string
    lodsb
    test al, al
    jz .ret
    call putc
    jmp puts
.ret:
    ret

put_hex:                            ; RAX, as 0x... without leading zeros
    push rax
    mov al, '0'
    call putc
    mov al, 'x'
    call putc
    pop rax
    mov ecx, 16
    xor r10d, r10d                  ; printed a digit yet?
.l:
    rol rax, 4
    mov edx, eax
    and edx, 15
    dec ecx
    jz .emit                        ; always print the last digit
    test r10d, r10d
    jnz .emit
    test edx, edx
    jz .l
.emit:
    mov r10d, 1
    push rax
    lea eax, [rdx + '0']
    cmp al, '9'
    jbe .p
    add al, 'a' - '9' - 1
.p:
    call putc
    pop rax
    test ecx, ecx
    jnz .l
    ret

put_dec:                            ; RAX
    mov ecx, 10
    xor r10d, r10d
.div:
    xor edx, edx
    div rcx
    add dl, '0'
    push rdx
    inc r10d
    test rax, rax
    jnz .div
.out:
    pop rax
    call putc
    dec r10d
    jnz .out
    ret

halt_forever:
    cli
    hlt
    jmp halt_forever

; --------------------------------------------------------------------------
; APs in long mode: take a slot (stack + TSS), then check in for a cpu index.
ap_long:
    mov eax, 1
    lock xadd [next_slot], eax
    cmp eax, MAX_CPUS
    jae halt_forever
    mov ebx, eax
    lea eax, [rax + 1]
    shl rax, 12                     ; STACK_SIZE
    mov esp, kstacks
    add rsp, rax
    lidt [idtr]
    mov eax, ebx
    shl eax, 4
    add eax, SEL_TSS0
    ltr ax
    mov eax, 1
    lock xadd [checkin], eax
    test eax, CHECKIN_CLOSED
    jnz halt_forever
    inc eax
    cmp rax, [p_ncpus]
    jae halt_forever                ; more vCPUs than ncpus: park
    mov edi, eax
    mov esi, ebx
    ; fall through

; EDI = cpu index, ESI = slot.  Drop to ring 3 with IOPL=3, IF=0.
enter_user:
    lea eax, [rsi + 1]
    shl rax, 12
    mov ecx, ustacks
    add rax, rcx
    push SEL_UDATA
    push rax
    push 0x3002
    push SEL_UCODE64
    lea rax, [user_sweep]
    push rax
    iretq

; --------------------------------------------------------------------------
; Ring 3: RDI = cpu index.  Everything below runs natively, fast.
user_sweep:
.wait_go:
    pause
    cmp byte [go], 0
    je .wait_go
    ; slice = [start + cpu*per, ...) with per = pages/ncpus, last takes rest
    mov rcx, [p_ncpus]
    mov rax, [p_end]
    sub rax, [p_start]
    shr rax, 12
    xor edx, edx
    div rcx
    shl rax, 12                     ; bytes per slice
    mov r8, rax
    imul r8, rdi
    add r8, [p_start]               ; my start
    lea r9, [r8 + rax]              ; my end
    lea rdx, [rdi + 1]
    cmp rdx, rcx
    jne .not_last
    mov r9, [p_end]
.not_last:
    mov rax, rdi
    xor edx, edx
    mov ecx, 10
    div rcx
    lea r14d, [rdx + '0']           ; sweep marker digit
    mov r10, [p_mix]
    mov r11, [p_delay]
    mov r13, [p_sweeps]
    mov r12d, 1                     ; sweep number
    cmp r8, r9
    jae .done                       ; empty slice
    mov dx, COM1
.sweep:
    mov rbx, r8
.page:
    mov rax, r12
    shl rax, 32
    mov rcx, rbx
    shr rcx, 12
    or rax, rcx
    xor rax, r10                    ; word = ((s << 32) | p) ^ mix
    mov rdi, rbx
    mov ecx, 512
    rep stosq
    mov rcx, r11
    test rcx, rcx
    jz .next
.delay:
    dec rcx
    jnz .delay
.next:
    add rbx, 4096
    cmp rbx, r9
    jb .page
    mov eax, r14d
    out dx, al
    inc r12
    test r13, r13
    jz .sweep
    cmp r12, r13
    jbe .sweep
.done:
    pause
    jmp .done

; --------------------------------------------------------------------------
; Exceptions and stray interrupts: print "!XX" (hex vector) and stop.
align 8
exc_stubs:
%assign i 0
%rep 256
.s%+i:
    mov al, i
    jmp near exc_common
    times 8 - ($ - .s%+i) nop       ; every stub is 8 bytes (errors if not)
%assign i i + 1
%endrep

exc_common:
    movzx ebx, al
    mov dx, COM1
    mov al, 10
    out dx, al
    mov al, '!'
    out dx, al
%macro OUT_NIBBLE 0
    add al, '0'
    cmp al, '9'
    jbe %%ok
    add al, 'a' - '9' - 1
%%ok:
    out dx, al
%endmacro
    mov al, bl
    shr al, 4
    OUT_NIBBLE
    mov al, bl
    and al, 15
    OUT_NIBBLE
    ; Faulting RIP (and error code, for the vectors that push one).
    mov eax, (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | \
             (1 << 14) | (1 << 17) | (1 << 21) | (1 << 29) | (1 << 30)
    cmp ebx, 32
    jae .no_code
    bt eax, ebx
    jnc .no_code
    lea rsi, [msg_err]
    call puts
    pop rax
    call put_hex
.no_code:
    lea rsi, [msg_rip]
    call puts
    mov rax, [rsp]
    call put_hex
    mov al, 10
    call putc
    jmp halt_forever

; --------------------------------------------------------------------------
; Real-mode AP trampoline, copied to TRAMP_ADDR; runs with CS = 0x0800.
bits 16
tramp_start:
    cli
    o32 lgdt [cs:tramp_gdtr - tramp_start]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword SEL_KCODE32:ap_entry32
align 4
tramp_gdtr:
    dw gdt_end - gdt - 1
    dd gdt
tramp_end:

; --------------------------------------------------------------------------
; Data.
align 8
mb_magic_seen:  dd 0
mb_info:        dd 0
ram_end:        dq 0
next_slot:      dd 1                ; slot 0 is the BSP's
checkin:        dd 0                ; APs checked in | CHECKIN_CLOSED
bad_value:      db 0
go:             db 0
align 8
p_ncpus:        dq 1
p_start:        dq DEFAULT_START
p_end:          dq 0                ; 0: end of RAM
p_seed:         dq 0
p_delay:        dq 0
p_sweeps:       dq 0
p_mix:          dq 0

key_table:
    dq k_ncpus, p_ncpus
    dq k_start, p_start
    dq k_end, p_end
    dq k_seed, p_seed
    dq k_delay, p_delay
    dq k_sweeps, p_sweeps
    dq 0, 0
k_ncpus:        db "ncpus=", 0
k_start:        db "start=", 0
k_end:          db "end=", 0
k_seed:         db "seed=", 0
k_delay:        db "delay=", 0
k_sweeps:       db "sweeps=", 0

msg_ncpus:      db "guest: ncpus=", 0
msg_start:      db " start=", 0
msg_end:        db " end=", 0
msg_seed:       db " seed=", 0
msg_delay:      db " delay=", 0
msg_sweeps:     db " sweeps=", 0
msg_bad:        db "guest: warning: ignored a malformed cmdline value", 10, 0
msg_few:        db "guest: warning: only ", 0
msg_few2:       db " of ", 0
msg_few3:       db " APs came up", 10, 0
msg_err:        db " err=", 0
msg_rip:        db " rip=", 0
msg_empty:      db "guest: error: empty sweep region", 10, 0

align 8
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
idtr:
    dw idt_end - idt - 1
    dq idt

align 16
gdt:
    dq 0
    dq 0x00AF9A000000FFFF           ; 0x08 kernel code, 64-bit
    dq 0x00CF92000000FFFF           ; 0x10 kernel data
    dq 0x00AFFA000000FFFF           ; 0x18 user code, 64-bit, DPL 3
    dq 0x00CFF2000000FFFF           ; 0x20 user data, DPL 3
    dq 0x00CF9A000000FFFF           ; 0x28 kernel code, 32-bit (APs)
%assign i 0
%rep MAX_CPUS                       ; 0x30 + 16*i: TSS of slot i
    dw TSS_SIZE - 1
    dw PA(tss + i * TSS_SIZE) & 0xFFFF
    db (PA(tss + i * TSS_SIZE) >> 16) & 0xFF
    db 0x89                         ; present, available 64-bit TSS
    db 0
    db (PA(tss + i * TSS_SIZE) >> 24) & 0xFF
    dd 0
    dd 0
%assign i i + 1
%endrep
gdt_end:

; One TSS per slot: RSP0 is the stack used when ring 3 traps, and the I/O
; bitmap opens COM1 to ring 3 for hosts that do not honour IOPL=3.
TSS_SIZE        equ 104 + 128 + 1
tss:
%assign i 0
%rep MAX_CPUS
    dd 0
    dq kstacks + (i + 1) * STACK_SIZE
    times 88 db 0
    dw 0
    dw 104                          ; I/O bitmap follows
    times 0x3f8 / 8 db 0xFF         ; ports 0..0x3f7: denied
    db 0x00                         ; 0x3f8..0x3ff: allowed
    db 0xFF                         ; terminator
%assign i i + 1
%endrep

align 16
idt:
%assign i 0
%rep 256
    dw (PA(exc_stubs) + 8 * i) & 0xFFFF
    dw SEL_KCODE64
    db 0
    db 0x8E                         ; present, DPL 0, interrupt gate
    dw ((PA(exc_stubs) + 8 * i) >> 16) & 0xFFFF
    dd 0
    dd 0
%assign i i + 1
%endrep
idt_end:

; Identity map of the first 4 GiB with 2 MiB pages, user-accessible.
align 4096
pml4:
    dq PA(pdpt) | 7
    times 511 dq 0
pdpt:
%assign i 0
%rep 4
    dq PA(pd) + i * 4096 + 7
%assign i i + 1
%endrep
    times 508 dq 0
pd:
%assign i 0
%rep 2048
    dq (i << 21) | 0x87             ; present, writable, user, 2 MiB
%assign i i + 1
%endrep

image_end:

; --------------------------------------------------------------------------
; Not in the file: zeroed by the loader (bss_end_addr).
absolute PA(image_end)
kstacks:        resb MAX_CPUS * STACK_SIZE
ustacks:        resb MAX_CPUS * STACK_SIZE
bss_end:

min_start       equ (bss_end + 4095) & ~4095
