"""The protocol between the engine and its workers, as Python sees it.

The C definitions are the reference: frame kinds and flags in engine/frame.h, error
kinds in engine/error.h, the store's shared-memory layout in engine/store.h and
engine/store.c. Every module of slither_worker takes these values from here and from
nowhere else, and tests/py/test_protocol.py holds this file equal to C in both
directions: each upper-case integer here is a C constant of the same name without
its SL_ prefix (store.c's private layout names take a SEG_ prefix), and a constant
on one side that the other lacks fails the test.
"""

# ---- frames (engine/frame.h) -------------------------------------------------------
# After a u32 length: u8 kind, u8 flags, u16 reserved, u32 id, u32 meta_len, meta,
# u32 data_len, data, attachments (all little-endian).

FRAME_HELLO = 1       # worker -> engine: meta = worker facts
FRAME_CALL = 2        # engine -> worker: meta = {m, f, s}, data = payloads
FRAME_RESULT = 3      # worker -> engine: data = results
FRAME_ERROR = 4       # worker -> engine: meta = {kind, type, message, traceback, ...}
FRAME_RELEASE = 5     # engine -> worker: meta = {s}: drop the session's state
FRAME_VIEW = 6        # worker -> engine: meta = "<call id>:<view name>", data = args
FRAME_VIEW_REPLY = 7  # engine -> worker: data = result, or meta = {"error": ...}

FRAME_FLAG_SPIN = 1    # CALL: poll the pipe for a while after replying
FRAME_FLAG_PICKLE = 2  # CALL, RESULT, VIEW, VIEW_REPLY: data is a pickle, not JSON

FRAME_PREFIX = 16  # len, kind, flags, reserved, id, meta_len

# ---- error kinds (engine/error.h, SL_ERRNO_MAP, in its order) ----------------------
# The `kind` of an ERROR frame's meta is one of these names. The worker sends the
# three below; the others are the engine's, listed so that a kind is never a name
# that C does not know.

ERROR_KINDS = (
    "out_of_memory",
    "invalid",
    "python",
    "import",
    "result_mismatch",
    "worker_crashed",
    "timeout",
    "session_lost",
    "pool_stopped",
    "pool_failed",
    "start_failed",
    "protocol",
    "codec",
    "too_big",
    "not_found",
    "canceled",
    "no_space",
)

EPYTHON = "python"             # the function raised
ECODEC = "codec"               # payloads or results that cannot cross
EIMPORT = "import"             # module or function not found, or importing it failed
EMISMATCH = "result_mismatch"  # not a list, or not one result per payload

# ---- store (engine/store.h; segment and directory layout of engine/store.c) --------

SEG_MAGIC = 0x32544C53  # "SLT2"
DIR_MAGIC = 0x31444C53  # "SLD1"
TABLE_SET = 0
TABLE_ORDERED_SET = 1
TABLE_BAG = 2
STORE_NAME_MAX = 64   # a table name field, NUL-padded
SEG_PATH_MAX = 160    # a segment path field, NUL-padded

# A table segment: header, then SEG_SLOT-byte slots {hash, key word, value word},
# then the heap.
SEG_HDR = 128
SEG_H_MAGIC = 0        # u32
SEG_H_TYPE = 4         # u32, TABLE_*
SEG_H_SEQ = 8          # u64, odd while a multi-key write runs
SEG_H_RETIRED = 16     # u32, non-zero once a newer segment replaced this one
SEG_H_CAP = 20         # u32, slots (a power of two)
SEG_H_COUNT = 24       # u64, live keys
SEG_H_HEAP_OFF = 32    # u64, where the heap starts
SEG_H_HEAP_SIZE = 40   # u64
SEG_H_HEAP_USED = 48   # u64
SEG_H_NVALS = 56       # u64, values of a bag
SEG_H_GARBAGE = 64     # u64
SEG_H_USED_SLOTS = 72  # u64
SEG_SLOT = 24
# A bag's value word points at its list: a SEG_BAG_HDR-byte header (the writer's
# capacity), then SEG_BAG_ENTRY-byte entries {u32 heap offset, u32 length}; the
# word's length is SEG_BAG_HDR + SEG_BAG_ENTRY * (values in the list).
SEG_BAG_HDR = 4
SEG_BAG_ENTRY = 8

# The store's directory: a header, then one DIR_ENTRY-byte entry per table.
DIR_HDR = 64
DIR_H_MAGIC = 0    # u32
DIR_H_NTABLES = 4  # u32
DIR_H_SEQ = 8      # u64, odd while the entries are rewritten
DIR_ENTRY = 256
DIR_E_NAME = 0     # STORE_NAME_MAX bytes
DIR_E_PATH = 64    # SEG_PATH_MAX bytes: the table's current segment
