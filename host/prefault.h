/*
 * prefault: breaks copy-on-write of the host's initialised data up front,
 * while the process has one thread.
 *
 * libpython's .data (static type objects, the runtime state: ~1.2 MB) is a
 * private file mapping: the interpreter's first write to each page is a
 * copy-on-write fault, and a page it read first is mapped read-only, so the
 * fault must also flush that translation from every CPU running the
 * process. With the archive's verifier thread running on the other core,
 * each such flush is an inter-processor interrupt the main thread waits
 * for (a VM exit in a virtual machine): ~300 of them in a server's start,
 * about 4% of its main thread (perf). A server's start writes to nearly all
 * of these pages anyway (1,268 of 1,280 KB private-dirty after a FastAPI
 * app's start), so copying them before the thread exists costs no memory
 * and no interrupts.
 */
#ifndef APPBIN_PREFAULT_H
#define APPBIN_PREFAULT_H

/* MADV_POPULATE_WRITE over the main program's writable file-backed pages
 * (past its RELRO part). Advice: where the kernel lacks it (before 5.14),
 * nothing happens. */
void prefault_program_data(void);

#endif
