/* _span_wire: the gateway's own spans (LeanSpan) as OTLP protobuf bytes, in C.
 *
 * An optional accelerator of otlp_wire.SpanEncoder._lean_span, which stays the reference: for the
 * common span (no events, no dropped attributes, no trace state, links without attributes, str or int
 * attribute values, any status) encode_span() returns exactly the bytes that method returns (one
 * ScopeSpans.spans field: tag, length, Span); for any other span it returns None and the Python
 * encoder encodes it (and logs and leaves out what it cannot encode, as the SDK does). It never
 * encodes differently from Python: where unsure, it declines.
 *
 * Attribute values come from clients (paths, user agents): every write goes through one growing,
 * bounds-checked heap buffer (no fixed-size buffer holds variable data), every C API result is
 * checked, and the GIL is held throughout. The buffer is local to a call: code a call may run
 * (a __bool__) cannot reach another call's buffer.
 *
 * bind() tells it the span type's layout once: LeanSpan keeps its fields in __slots__, and a span of
 * exactly that type has them read at their offsets (found from the type's own member descriptors)
 * where a generic attribute lookup each cost ~190 instructions (a third of a span's encoding). Any
 * other object is read through PyObject_GetAttr, as before bind().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>  /* T_OBJECT_EX: how a __slots__ field is stored */
#include <stdint.h>
#include <string.h>

/* Bumped when encode_span's contract changes: otlp_wire ignores a module built from other sources. */
#define SPAN_WIRE_FORMAT 2

/* What a step returns: done, an exception set (propagated), or "not this span" (no exception). */
#define DONE 0
#define FAILED (-1)
#define DECLINED 1

/* -- the buffer --------------------------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

/* Room for `extra` more bytes, doubling; sizes checked against overflow before any arithmetic. */
static int
reserve(Buffer *buf, Py_ssize_t extra)
{
    if (extra < 0 || extra > PY_SSIZE_T_MAX - buf->len) {
        PyErr_NoMemory();
        return FAILED;
    }
    Py_ssize_t need = buf->len + extra;
    if (need <= buf->cap) {
        return DONE;
    }
    Py_ssize_t cap = buf->cap > 0 ? buf->cap : 1024;  /* a gateway span: 300-900 bytes */
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    unsigned char *data = PyMem_Realloc(buf->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    buf->data = data;
    buf->cap = cap;
    return DONE;
}

/* The writers below check the room they need (reserve() is their slow path), then write: a span is
 * ~100 small writes, so they are inline and a byte is one comparison and one store. */

static inline int
room(Buffer *buf, Py_ssize_t size)
{
    if (size < 0 || size > buf->cap - buf->len) {
        return reserve(buf, size);  /* a negative size is refused there */
    }
    return DONE;
}

static inline int
put(Buffer *buf, const void *bytes, Py_ssize_t size)
{
    if (room(buf, size) < 0) {
        return FAILED;
    }
    if (size > 0) {
        memcpy(buf->data + buf->len, bytes, (size_t)size);
        buf->len += size;
    }
    return DONE;
}

static inline int
put_byte(Buffer *buf, unsigned char byte)
{
    if (room(buf, 1) < 0) {
        return FAILED;
    }
    buf->data[buf->len++] = byte;
    return DONE;
}

static inline Py_ssize_t
varint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* A protobuf varint: 7 bits a byte, least significant first (at most 10 bytes for 64 bits). */
static inline int
put_varint(Buffer *buf, uint64_t value)
{
    if (room(buf, 10) < 0) {
        return FAILED;
    }
    while (value >= 0x80) {
        buf->data[buf->len++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    buf->data[buf->len++] = (unsigned char)value;
    return DONE;
}

/* The same writes after room() was made for all of them (an attribute's whole field, whose size is
 * counted first): no check per byte. Each writes exactly the bytes varint_size() counts. */
static inline void
write_byte(Buffer *buf, unsigned char byte)
{
    buf->data[buf->len++] = byte;
}

static inline void
write_varint(Buffer *buf, uint64_t value)
{
    while (value >= 0x80) {
        buf->data[buf->len++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    buf->data[buf->len++] = (unsigned char)value;
}

static inline void
write_bytes(Buffer *buf, const char *bytes, Py_ssize_t size)
{
    if (size > 0) {
        memcpy(buf->data + buf->len, bytes, (size_t)size);
        buf->len += size;
    }
}

/* fixed32 and fixed64 fields are little-endian (size 4 or 8); trace and span ids big-endian bytes. */
static inline int
put_le(Buffer *buf, uint64_t value, int size)
{
    if (room(buf, 8) < 0) {
        return FAILED;
    }
    for (int i = 0; i < size && i < 8; i++) {
        buf->data[buf->len++] = (unsigned char)(value >> (8 * i));
    }
    return DONE;
}

static inline int
put_be64(Buffer *buf, uint64_t value)
{
    if (room(buf, 8) < 0) {
        return FAILED;
    }
    for (int i = 0; i < 8; i++) {
        buf->data[buf->len++] = (unsigned char)(value >> (56 - 8 * i));
    }
    return DONE;
}

/* -- reading Python values ---------------------------------------------------------------------- */

/* An expected conversion failure (an int beyond the field, a str that is not valid Unicode) means
 * "not this span": cleared and declined, so that Python meets it again and handles it its way.
 * Anything else (MemoryError) propagates. */
static int
decline_on(PyObject *expected)
{
    if (PyErr_ExceptionMatches(expected)) {
        PyErr_Clear();
        return DECLINED;
    }
    return FAILED;
}

/* A str's UTF-8 bytes: a compact ASCII str's own characters (no copy), else a bytes object owned here
 * (not the str's cached UTF-8, which would stay with a client's string as long as the string lives). */
typedef struct {
    const char *data;
    Py_ssize_t size;
    PyObject *owner;
} Utf8;

static int
utf8_of(PyObject *text, Utf8 *out)
{
    out->owner = NULL;
    if (!PyUnicode_CheckExact(text)) {
        return DECLINED;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {  /* a legacy str made ready; a no-op from 3.12 */
        return FAILED;
    }
#endif
    if (PyUnicode_IS_COMPACT_ASCII(text)) {  /* most: one byte a character, its UTF-8 as it is */
        out->data = (const char *)PyUnicode_DATA(text);
        out->size = PyUnicode_GET_LENGTH(text);
        return DONE;
    }
    out->owner = PyUnicode_AsUTF8String(text);  /* UnicodeEncodeError for a lone surrogate */
    if (out->owner == NULL) {
        return decline_on(PyExc_UnicodeEncodeError);
    }
    out->data = PyBytes_AS_STRING(out->owner);
    out->size = PyBytes_GET_SIZE(out->owner);
    return DONE;
}

#if PY_VERSION_HEX < 0x030C0000
/* Python 3.11's int layout (Include/cpython/longintrepr.h): ob_size is the digit count, negative for a
 * negative number; digits of PyLong_SHIFT bits, least significant first. Read here digit by digit, the
 * ids and times being two to five digits: PyLong_AsUnsignedLongLong takes _PyLong_AsByteArray's ~190
 * instructions for any int of more than one digit, this ~20. Later versions' layout differs: there the
 * conversions below are the C API's. */
#define DIGITS_READABLE 1

/* The digits of an exact int into `words` 64-bit words (most significant first), DECLINED when it is
 * negative or does not fit. `count` is 1 or 2. */
static int
digits_into(PyObject *number, uint64_t *words, int count)
{
    Py_ssize_t size = Py_SIZE(number);
    if (size < 0) {
        return DECLINED;
    }
    const digit *digits = ((PyLongObject *)number)->ob_digit;
    uint64_t high = 0, low = 0;
    for (Py_ssize_t i = size - 1; i >= 0; i--) {  /* each digit below the ones read: shift them up */
        if (count == 1) {
            if (low >> (64 - PyLong_SHIFT)) {
                return DECLINED;  /* a bit would shift out: past 2**64 - 1 */
            }
            low = (low << PyLong_SHIFT) | (uint64_t)digits[i];
        }
        else {
            if (high >> (64 - PyLong_SHIFT)) {
                return DECLINED;  /* past 2**128 - 1 */
            }
            high = (high << PyLong_SHIFT) | (low >> (64 - PyLong_SHIFT));
            low = (low << PyLong_SHIFT) | (uint64_t)digits[i];
        }
    }
    if (count == 1) {
        words[0] = low;
    }
    else {
        words[0] = high;
        words[1] = low;
    }
    return DONE;
}
#else
#define DIGITS_READABLE 0
#endif

/* An exact int (not a bool) from 0 to 2**64 - 1. */
static int
uint64_of(PyObject *number, uint64_t *out)
{
    if (!PyLong_CheckExact(number)) {
        return DECLINED;
    }
#if DIGITS_READABLE
    return digits_into(number, out, 1);
#else
    unsigned long long value = PyLong_AsUnsignedLongLong(number);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return decline_on(PyExc_OverflowError);  /* negative, or too large */
    }
    *out = (uint64_t)value;
    return DONE;
#endif
}

/* A time: None or 0 is no field (as Python's truth test), else an exact int that fits fixed64. */
static int
time_of(PyObject *time, uint64_t *out)
{
    if (time == Py_None) {
        *out = 0;
        return DONE;
    }
    return uint64_of(time, out);
}

/* A 128-bit trace id (an exact int from 0 to 2**128 - 1) as its two 64-bit halves. */
static int
trace_id_of(PyObject *number, uint64_t *high, uint64_t *low)
{
    if (!PyLong_CheckExact(number)) {
        return DECLINED;
    }
#if DIGITS_READABLE
    uint64_t words[2];
    int read = digits_into(number, words, 2);
    if (read == DONE) {
        *high = words[0];
        *low = words[1];
    }
    return read;
#else
    PyObject *shift = PyLong_FromLong(64);
    if (shift == NULL) {
        return FAILED;
    }
    PyObject *upper = PyNumber_Rshift(number, shift);
    Py_DECREF(shift);
    if (upper == NULL) {
        return FAILED;
    }
    int result = uint64_of(upper, high);  /* declines a negative id, or one of more than 128 bits */
    Py_DECREF(upper);
    if (result != DONE) {
        return result;
    }
    *low = (uint64_t)PyLong_AsUnsignedLongLongMask(number);
    if (*low == (uint64_t)-1 && PyErr_Occurred()) {
        return FAILED;
    }
    return DONE;
#endif
}

/* A SpanContext is a tuple: (trace id, span id, is remote, flags, trace state, is valid). */
static int
context_of(PyObject *context, uint64_t *high, uint64_t *low, uint64_t *span_id)
{
    if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
        return DECLINED;
    }
    int result = trace_id_of(PyTuple_GET_ITEM(context, 0), high, low);
    if (result != DONE) {
        return result;
    }
    return uint64_of(PyTuple_GET_ITEM(context, 1), span_id);
}

/* Span.trace_id (field 1) and Span.span_id (field 2), or the same in a Span.Link. */
static int
put_ids(Buffer *buf, uint64_t high, uint64_t low, uint64_t span_id)
{
    static const unsigned char trace_tag[] = {0x0a, 0x10}, span_tag[] = {0x12, 0x08};
    if (put(buf, trace_tag, 2) < 0 || put_be64(buf, high) < 0 || put_be64(buf, low) < 0
        || put(buf, span_tag, 2) < 0 || put_be64(buf, span_id) < 0) {
        return FAILED;
    }
    return DONE;
}

/* The attribute names read, interned once per module (module state, not globals). */
enum {
    CONTEXT, PARENT, NAME, KIND, START, END, ATTRIBUTES, DROPPED, EVENTS, LINKS, STATUS, /* a span's */
    LINK_ATTRIBUTES, LINK_CONTEXT, STATUS_CODE, DESCRIPTION, VALUE,                      /* the rest */
    NAME_COUNT,
};

#define SPAN_FIELDS (STATUS + 1)

static const char *const NAMES[NAME_COUNT] = {
    "_context", "_parent", "_name", "_kind", "_start_time", "_end_time", "_attributes", "_dropped",
    "_events", "_links", "_status", "_attributes", "_context", "status_code", "description", "_value_",
};

/* SpanKind's members, by their value (INTERNAL 0 to CONSUMER 4). */
#define KIND_COUNT 5

typedef struct {
    PyObject *names[NAME_COUNT];
    /* Set by bind(): the span type whose fields are __slots__ (a strong reference; NULL: none bound),
     * each field's offset in its instances, and the SpanKind members known by identity. */
    PyTypeObject *span_type;
    Py_ssize_t offsets[SPAN_FIELDS];
    PyObject *kinds[KIND_COUNT];
} State;

/* A new reference to object.<NAMES[which]>, NULL with an exception set. */
static PyObject *
field(State *state, PyObject *object, int which)
{
    return PyObject_GetAttr(object, state->names[which]);
}

/* A new reference to a span's field `which` (< SPAN_FIELDS): its slot when the span is exactly the bound
 * type, else field(); NULL with an exception set (an empty slot: AttributeError, as getattr). */
static PyObject *
span_field(State *state, PyObject *span, int which)
{
    if (state->span_type == NULL || Py_TYPE(span) != state->span_type) {
        return field(state, span, which);
    }
    PyObject *value = *(PyObject **)((char *)span + state->offsets[which]);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, state->names[which]);
        return NULL;
    }
    return Py_NewRef(value);
}

/* -- the span's parts --------------------------------------------------------------------------- */

/* One Span.attributes entry (field 9): KeyValue{key (1), value (2): AnyValue{string (1) | int (3)}}.
 * A str or an int in int64 (not a bool, not an int subclass), under a str key; else declined. */
static int
put_attribute(Buffer *buf, PyObject *key, PyObject *value)
{
    Utf8 name, text = {NULL, 0, NULL};
    int result = utf8_of(key, &name);
    if (result != DONE) {
        return result;
    }
    uint64_t number = 0;
    Py_ssize_t any_size;
    if (PyUnicode_CheckExact(value)) {
        result = utf8_of(value, &text);
        if (result != DONE) {
            goto done;
        }
        any_size = 1 + varint_size((uint64_t)text.size) + text.size;
    }
    else if (PyLong_CheckExact(value)) {
        long long signed_number = PyLong_AsLongLong(value);
        if (signed_number == -1 && PyErr_Occurred()) {
            result = decline_on(PyExc_OverflowError);  /* beyond int64: Python logs and leaves it out */
            goto done;
        }
        number = (uint64_t)signed_number;  /* two's complement, as protobuf's int64 */
        any_size = 1 + varint_size(number);
    }
    else {
        result = DECLINED;  /* a bool, a float, a sequence, None: Python's encoder */
        goto done;
    }
    /* The sizes are of strings already in memory: far below PY_SSIZE_T_MAX, no overflow. */
    Py_ssize_t key_size = name.size > 0 ? 1 + varint_size((uint64_t)name.size) + name.size : 0;
    Py_ssize_t pair_size = key_size + 1 + varint_size((uint64_t)any_size) + any_size;
    Py_ssize_t field_size = 1 + varint_size((uint64_t)pair_size) + pair_size;
    /* Room for the whole field once, then its bytes written unchecked: exactly field_size of them. */
    result = FAILED;
    if (room(buf, field_size) < 0) {
        goto done;
    }
    Py_ssize_t end = buf->len + field_size;
    write_byte(buf, 0x4a);
    write_varint(buf, (uint64_t)pair_size);
    if (name.size > 0) {  /* an empty key has no field: protobuf leaves out an empty string */
        write_byte(buf, 0x0a);
        write_varint(buf, (uint64_t)name.size);
        write_bytes(buf, name.data, name.size);
    }
    write_byte(buf, 0x12);
    write_varint(buf, (uint64_t)any_size);
    if (text.data != NULL) {  /* a string value, even empty: a oneof case is always written */
        write_byte(buf, 0x0a);
        write_varint(buf, (uint64_t)text.size);
        write_bytes(buf, text.data, text.size);
    }
    else {
        write_byte(buf, 0x18);
        write_varint(buf, number);
    }
    if (buf->len != end) {  /* the count above and the writes disagree: a bug, never a wrong field sent */
        PyErr_SetString(PyExc_SystemError, "_span_wire: an attribute's size was miscounted");
        goto done;
    }
    result = DONE;
done:
    Py_XDECREF(name.owner);
    Py_XDECREF(text.owner);
    return result;
}

static int
put_attributes(Buffer *buf, PyObject *attributes)
{
    if (!PyDict_CheckExact(attributes)) {  /* an empty mapping (NO_ATTRIBUTES) has no field; others: Python */
        int truth = PyObject_IsTrue(attributes);
        return truth < 0 ? FAILED : truth ? DECLINED : DONE;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    /* Nothing below runs Python code (exact str and int only), so the dict cannot change meanwhile;
     * each item is held all the same. */
    while (PyDict_Next(attributes, &position, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int result = put_attribute(buf, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (result != DONE) {
            return result;
        }
    }
    return DONE;
}

/* Span.links (field 13): links without attributes (NO_ATTRIBUTES) only, as ids and flags. */
static int
put_links(State *state, Buffer *buf, PyObject *links, PyObject *no_attributes)
{
    if (!PyTuple_CheckExact(links)) {
        return DECLINED;  /* a BoundedList: some were dropped */
    }
    /* The tuple is held by the caller and cannot change: its items stay alive. */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(links); i++) {
        PyObject *link = PyTuple_GET_ITEM(links, i);
        PyObject *attributes = field(state, link, LINK_ATTRIBUTES);
        if (attributes == NULL) {
            return FAILED;
        }
        int plain = attributes == no_attributes;
        Py_DECREF(attributes);
        if (!plain) {
            return DECLINED;
        }
        PyObject *context = field(state, link, LINK_CONTEXT);
        if (context == NULL) {
            return FAILED;
        }
        uint64_t high, low, span_id;
        int result = context_of(context, &high, &low, &span_id);
        int remote = result == DONE ? PyObject_IsTrue(PyTuple_GET_ITEM(context, 2)) : 0;
        Py_DECREF(context);
        if (result != DONE) {
            return result;
        }
        if (remote < 0) {
            return FAILED;
        }
        /* tag 13, then 33 bytes: the ids (18 and 10) and Link.flags (field 7, fixed32: 5) */
        if (put_byte(buf, 0x6a) < 0 || put_byte(buf, 18 + 10 + 5) < 0 || put_ids(buf, high, low, span_id) < 0
            || put_byte(buf, 0x35) < 0 || put_le(buf, remote ? 0x300 : 0x100, 4) < 0) {
            return FAILED;
        }
    }
    return DONE;
}

/* An enum member's value (SpanKind, StatusCode) from 0 to `most`; declined otherwise. */
static int
enum_value(State *state, PyObject *member, long most, long *out)
{
    PyObject *value = field(state, member, VALUE);
    if (value == NULL) {
        return FAILED;
    }
    int result = DECLINED;
    if (PyLong_CheckExact(value)) {
        *out = PyLong_AsLong(value);
        if (*out == -1 && PyErr_Occurred()) {
            result = decline_on(PyExc_OverflowError);
        }
        else if (*out >= 0 && *out <= most) {
            result = DONE;
        }
    }
    Py_DECREF(value);
    return result;
}

/* Span.status (field 15): Status{message (2), code (3)}, always present (empty when unset). */
static int
put_status(State *state, Buffer *buf, PyObject *status, PyObject *default_status)
{
    if (status == default_status) {
        return put_byte(buf, 0x7a) < 0 || put_byte(buf, 0x00) < 0 ? FAILED : DONE;
    }
    PyObject *code_member = field(state, status, STATUS_CODE);
    if (code_member == NULL) {
        return FAILED;
    }
    long code;
    int result = enum_value(state, code_member, 2, &code);  /* UNSET 0, OK 1, ERROR 2 */
    Py_DECREF(code_member);
    if (result != DONE) {
        return result;
    }
    PyObject *description = field(state, status, DESCRIPTION);
    if (description == NULL) {
        return FAILED;
    }
    /* `description` is held until written: an ASCII message's bytes are the str's own. */
    Utf8 message = {NULL, 0, NULL};
    result = description == Py_None ? DONE : utf8_of(description, &message);
    if (result != DONE) {
        goto done;
    }
    Py_ssize_t size = (message.size > 0 ? 1 + varint_size((uint64_t)message.size) + message.size : 0)
                      + (code ? 2 : 0);
    result = FAILED;
    if (put_byte(buf, 0x7a) < 0 || put_varint(buf, (uint64_t)size) < 0) {
        goto done;
    }
    if (message.size > 0
        && (put_byte(buf, 0x12) < 0 || put_varint(buf, (uint64_t)message.size) < 0
            || put(buf, message.data, message.size) < 0)) {
        goto done;
    }
    if (code && (put_byte(buf, 0x18) < 0 || put_byte(buf, (unsigned char)code) < 0)) {
        goto done;
    }
    result = DONE;
done:
    Py_XDECREF(message.owner);
    Py_DECREF(description);
    return result;
}

/* -- the span ----------------------------------------------------------------------------------- */

/* The Span message's fields, in field-number order: what follows the ScopeSpans.spans tag and length.
 * `f` holds the span's fields (by the enum's first SPAN_FIELDS names), each a reference the caller holds. */
static int
put_span(State *state, Buffer *buf, PyObject *const *f, PyObject *default_status,
         PyObject *default_trace_state, PyObject *no_attributes)
{
    int result, truth;
    /* Events (a tuple only while there are none) or dropped attributes: Python's general path. */
    if (!PyTuple_CheckExact(f[EVENTS]) || PyTuple_GET_SIZE(f[EVENTS]) != 0) {
        return DECLINED;
    }
    if ((truth = PyObject_IsTrue(f[DROPPED])) != 0) {
        return truth < 0 ? FAILED : DECLINED;
    }
    uint64_t high, low, span_id;
    if ((result = context_of(f[CONTEXT], &high, &low, &span_id)) != DONE) {
        return result;
    }
    PyObject *trace_state = PyTuple_GET_ITEM(f[CONTEXT], 4);
    if (trace_state != default_trace_state && (truth = PyObject_IsTrue(trace_state)) != 0) {
        return truth < 0 ? FAILED : DECLINED;  /* a trace state (field 3): Python writes it */
    }
    if (put_ids(buf, high, low, span_id) < 0) {
        return FAILED;
    }
    int remote = 0;
    PyObject *parent = f[PARENT];
    if (parent != Py_None) {  /* Span.parent_span_id (field 4) */
        uint64_t parent_id;
        if (!PyTuple_Check(parent) || PyTuple_GET_SIZE(parent) != 6) {
            return DECLINED;
        }
        if ((result = uint64_of(PyTuple_GET_ITEM(parent, 1), &parent_id)) != DONE) {
            return result;
        }
        if ((remote = PyObject_IsTrue(PyTuple_GET_ITEM(parent, 2))) < 0) {
            return FAILED;
        }
        if (put_byte(buf, 0x22) < 0 || put_byte(buf, 0x08) < 0 || put_be64(buf, parent_id) < 0) {
            return FAILED;
        }
    }
    Utf8 name;  /* Span.name (field 5), only when not empty */
    if ((result = utf8_of(f[NAME], &name)) != DONE) {
        return result;
    }
    if (name.size > 0
        && (put_byte(buf, 0x2a) < 0 || put_varint(buf, (uint64_t)name.size) < 0
            || put(buf, name.data, name.size) < 0)) {
        result = FAILED;
    }
    Py_XDECREF(name.owner);
    if (result != DONE) {
        return result;
    }
    long kind = -1;  /* Span.kind (field 6): the API's enum (INTERNAL 0 to CONSUMER 4) + 1 */
    for (int i = 0; i < KIND_COUNT; i++) {
        if (state->kinds[i] != NULL && f[KIND] == state->kinds[i]) {  /* a bound member: its value, no lookup */
            kind = i;
            break;
        }
    }
    if (kind < 0 && (result = enum_value(state, f[KIND], KIND_COUNT - 1, &kind)) != DONE) {
        return result;
    }
    if (put_byte(buf, 0x30) < 0 || put_byte(buf, (unsigned char)(kind + 1)) < 0) {
        return FAILED;
    }
    uint64_t start, end;  /* start_time_unix_nano (field 7), end_time_unix_nano (8): fixed64, if set */
    if ((result = time_of(f[START], &start)) != DONE || (result = time_of(f[END], &end)) != DONE) {
        return result;
    }
    if (start && (put_byte(buf, 0x39) < 0 || put_le(buf, start, 8) < 0)) {
        return FAILED;
    }
    if (end && (put_byte(buf, 0x41) < 0 || put_le(buf, end, 8) < 0)) {
        return FAILED;
    }
    if ((result = put_attributes(buf, f[ATTRIBUTES])) != DONE) {
        return result;
    }
    if ((result = put_links(state, buf, f[LINKS], no_attributes)) != DONE) {
        return result;
    }
    if ((result = put_status(state, buf, f[STATUS], default_status)) != DONE) {
        return result;
    }
    /* Span.flags (field 16, fixed32): has-is-remote, and is-remote for a remote parent */
    if (put_byte(buf, 0x85) < 0 || put_byte(buf, 0x01) < 0 || put_le(buf, remote ? 0x300 : 0x100, 4) < 0) {
        return FAILED;
    }
    return DONE;
}

#define HEAD_ROOM 11

/* encode_span(span, default_status, default_trace_state, no_attributes, /) -> bytes | None */
static PyObject *
encode_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "encode_span() takes 4 positional arguments (%zd given)", nargs);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    PyObject *fields[SPAN_FIELDS] = {NULL};  /* a fixed count of references, not variable data */
    Buffer buf = {NULL, 0, 0};
    PyObject *out = NULL;
    for (int i = 0; i < SPAN_FIELDS; i++) {
        if ((fields[i] = span_field(state, args[0], i)) == NULL) {
            goto done;
        }
    }
    /* The Span is written after room for its ScopeSpans.spans tag and length (field 2: one byte, and
     * a varint of at most 10), which are known once it is written. */
    if (reserve(&buf, HEAD_ROOM) < 0) {
        goto done;
    }
    buf.len = HEAD_ROOM;
    int result = put_span(state, &buf, fields, args[1], args[2], args[3]);
    if (result == DECLINED) {
        out = Py_NewRef(Py_None);
    }
    else if (result == DONE) {
        unsigned char head[HEAD_ROOM];
        Py_ssize_t head_size = 0;
        uint64_t size = (uint64_t)(buf.len - HEAD_ROOM);
        head[head_size++] = 0x12;
        while (size >= 0x80) {
            head[head_size++] = (unsigned char)((size & 0x7F) | 0x80);
            size >>= 7;
        }
        head[head_size++] = (unsigned char)size;
        unsigned char *start = buf.data + HEAD_ROOM - head_size;
        memcpy(start, head, (size_t)head_size);
        out = PyBytes_FromStringAndSize((const char *)start, buf.len - (HEAD_ROOM - head_size));
    }
done:
    for (int i = 0; i < SPAN_FIELDS; i++) {
        Py_XDECREF(fields[i]);
    }
    PyMem_Free(buf.data);
    return out;
}

/* The offset of `span_type`'s own __slots__ field `name`: a member descriptor in its __dict__, of a
 * T_OBJECT_EX field that lies within the instance. 0: not such a field (no exception); -1: an error. */
static Py_ssize_t
slot_offset(PyTypeObject *span_type, PyObject *name)
{
    PyObject *descriptor = PyDict_GetItemWithError(span_type->tp_dict, name);  /* borrowed */
    if (descriptor == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
        || ((PyDescrObject *)descriptor)->d_type != span_type) {
        return 0;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
    if (member == NULL || member->type != T_OBJECT_EX || member->offset < (Py_ssize_t)sizeof(PyObject)
        || member->offset > span_type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)) {
        return 0;
    }
    return member->offset;
}

/* bind(span_type, kinds, /) -> bool */
static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "bind() takes 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind() needs the span type");
        return NULL;
    }
    if (!PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != KIND_COUNT) {
        PyErr_Format(PyExc_TypeError, "bind() needs a tuple of the %d SpanKind members", KIND_COUNT);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    PyTypeObject *span_type = (PyTypeObject *)args[0];
    Py_ssize_t offsets[SPAN_FIELDS];
    int bound = 1;
    for (int i = 0; i < SPAN_FIELDS && bound; i++) {
        offsets[i] = slot_offset(span_type, state->names[i]);
        if (offsets[i] < 0) {
            return NULL;
        }
        bound = offsets[i] > 0;
    }
    /* Replaced whole (or dropped: a type without those slots is read by attribute, as before). */
    Py_CLEAR(state->span_type);
    for (int i = 0; i < KIND_COUNT; i++) {
        Py_XSETREF(state->kinds[i], Py_NewRef(PyTuple_GET_ITEM(args[1], i)));
    }
    if (!bound) {
        Py_RETURN_FALSE;
    }
    memcpy(state->offsets, offsets, sizeof(offsets));
    state->span_type = (PyTypeObject *)Py_NewRef(args[0]);
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(span_type, kinds, /)\n--\n\n"
     "Read the fields of spans of exactly span_type from their __slots__ (True; False: it has not\n"
     "those slots, and they are read by attribute), and know the SpanKind members (a tuple by value)\n"
     "by identity."},
    {"encode_span", (PyCFunction)(void (*)(void))encode_span, METH_FASTCALL,
     "encode_span(span, default_status, default_trace_state, no_attributes, /)\n--\n\n"
     "A LeanSpan as one ScopeSpans.spans field (the bytes SpanEncoder._lean_span gives), or None\n"
     "for a span it leaves to the Python encoder."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return -1;
    }
    for (int i = 0; i < NAME_COUNT; i++) {
        if ((state->names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL) {
            return -1;  /* the names made so far are released by clear_module */
        }
    }
    return PyModule_AddIntConstant(module, "FORMAT", SPAN_WIRE_FORMAT);
}

static int
traverse_module(PyObject *module, visitproc visit, void *arg)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        for (int i = 0; i < NAME_COUNT; i++) {
            Py_VISIT(state->names[i]);
        }
        Py_VISIT(state->span_type);
        for (int i = 0; i < KIND_COUNT; i++) {
            Py_VISIT(state->kinds[i]);
        }
    }
    return 0;
}

static int
clear_module(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        for (int i = 0; i < NAME_COUNT; i++) {
            Py_CLEAR(state->names[i]);
        }
        Py_CLEAR(state->span_type);
        for (int i = 0; i < KIND_COUNT; i++) {
            Py_CLEAR(state->kinds[i]);
        }
    }
    return 0;
}

static void
free_module(void *module)
{
    clear_module((PyObject *)module);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "asgi_ws_gateway.telemetry._span_wire",
    .m_doc = "The gateway's own spans as OTLP protobuf bytes (an optional accelerator of otlp_wire).",
    .m_size = sizeof(State),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse_module,
    .m_clear = clear_module,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__span_wire(void)
{
    return PyModuleDef_Init(&module_def);
}
