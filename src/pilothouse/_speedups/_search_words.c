/* A span's search words, as PostgreSQL's binary tsvector, in C (pilothouse.store.search).

   Why it exists: the PostgreSQL batch writer makes every span's search vector itself (the distinct
   words of its ~1 KB document, in lower case). In Python that is a translation, a split into a bytes
   object per word and a set: ~15 us per benchmark span, for ~170 words of which ~30 are distinct.
   Here the words are hashed where they lie and only the distinct ones are copied out. Measure it
   against its reference with `python benchmarks/speedups.py`, end to end with
   `python benchmarks/ingest.py`. Built by hatch_build.py at install. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The output: a growing byte buffer (the vector being written). */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

/* Room for `more` bytes past the size, and 8 more: hash_word reads whole 8-byte words. */
static int reserve(Buffer *b, Py_ssize_t more) {
    more += 8;
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity * 2;
    if (capacity < b->size + more) capacity = b->size + more;
    char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

/* The distinct lexemes written so far: an open-addressing table of their places in the buffer. */
typedef struct {
    uint64_t hash; /* 0: empty */
    Py_ssize_t start, length;
} Slot;

typedef struct {
    Slot *slots;
    size_t mask; /* slots - 1, a power of 2 less 1 */
    size_t used;
} Table;

/* A word's first `n` bytes (at most 8) as an integer, those past them left out: the 8 bytes from
   `s` must be readable (the buffer keeps 8 bytes to spare past its end). */
static inline uint64_t load_bytes(const char *s, Py_ssize_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t x;
    memcpy(&x, s, 8);
    return n >= 8 ? x : x & ((1ULL << (8 * n)) - 1);
#else
    uint64_t x = 0;
    for (Py_ssize_t k = 0; k < n && k < 8; k++) x |= (uint64_t)(unsigned char)s[k] << (8 * k);
    return x;
#endif
}

/* A word's hash: one multiplication per 8 bytes (most words are one). */
static inline uint64_t hash_word(const char *s, Py_ssize_t n) {
    uint64_t h = (uint64_t)n;
    for (Py_ssize_t k = 0; k < n; k += 8) h = (h ^ load_bytes(s + k, n - k)) * 0x9E3779B97F4A7C15ULL;
    return (h ^ (h >> 29)) | 1; /* never 0, the empty slot */
}

static inline int same_word(const char *a, const char *b, Py_ssize_t n) {
    return n <= 8 ? load_bytes(a, n) == load_bytes(b, n) : memcmp(a, b, (size_t)n) == 0;
}

static int grow(Table *t) {
    size_t size = (t->mask + 1) * 2;
    Slot *slots = PyMem_Calloc(size, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        Slot s = t->slots[i];
        if (s.hash == 0) continue;
        size_t j = (size_t)s.hash & (size - 1);
        while (slots[j].hash != 0) j = (j + 1) & (size - 1);
        slots[j] = s;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

/* The word just written at the buffer's end (from `start`): kept (with its NUL and its 16-bit
   number of positions, 0) if it is new and at most `max_bytes` long, else taken back. 1 kept, 0 not,
   -1 error. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int keep_word(Table *t, Buffer *b, Py_ssize_t start, Py_ssize_t max_bytes) {
    Py_ssize_t length = b->size - start;
    if (length > max_bytes) {
        b->size = start;
        return 0;
    }
    const char *word = b->data + start;
    uint64_t h = hash_word(word, length);
    size_t i = (size_t)h & t->mask;
    while (t->slots[i].hash != 0) {
        Slot *s = &t->slots[i];
        if (s->hash == h && s->length == length && same_word(b->data + s->start, word, length)) {
            b->size = start; /* seen */
            return 0;
        }
        i = (i + 1) & t->mask;
    }
    t->slots[i].hash = h;
    t->slots[i].start = start;
    t->slots[i].length = length;
    if (reserve(b, 3) < 0) return -1;
    memset(b->data + b->size, 0, 3);
    b->size += 3;
    if (++t->used * 2 > t->mask + 1 && grow(t) < 0) return -1;
    return 1;
}

static inline int ascii_alnum(Py_UCS4 c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* An ASCII byte lowered if it is a letter or digit, 0 otherwise (set up at import). */
static unsigned char LOWERED[256];

/* A word of characters other than ASCII: `str.lower()` of the substring, as UTF-8 (Python's own
   full case mapping, final sigma included, as the reference does it). */
static int write_lowered(Buffer *b, PyObject *text, Py_ssize_t from, Py_ssize_t to) {
    PyObject *word = PyUnicode_Substring(text, from, to);
    if (word == NULL) return -1;
    PyObject *lowered = PyObject_CallMethod(word, "lower", NULL);
    Py_DECREF(word);
    if (lowered == NULL) return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(lowered, &n);
    int written = -1;
    if (utf8 != NULL && reserve(b, n) == 0) {
        memcpy(b->data + b->size, utf8, (size_t)n);
        b->size += n;
        written = 0;
    }
    Py_DECREF(lowered);
    return written;
}

/* A lexeme's place in the buffer, to sort, and its first 8 bytes as a big-endian integer (zeros past
   its end: a lexeme holds no NUL, so a prefix's key is the smaller). */
typedef struct {
    uint64_t key;
    const char *word;
    Py_ssize_t length;
} Lexeme;

static inline uint64_t sort_key(const char *s, Py_ssize_t n) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(load_bytes(s, n)); /* the buffer has 8 bytes to spare past its end */
#else
    uint64_t k = 0;
    for (Py_ssize_t i = 0; i < 8; i++) k = (k << 8) | (i < n ? (unsigned char)s[i] : 0);
    return k;
#endif
}

/* PostgreSQL's order of lexemes (tsCompareString): their bytes as unsigned, a prefix first. */
static inline int lexeme_less(const Lexeme *x, const Lexeme *y) {
    if (x->key != y->key) return x->key < y->key;
    /* the same first 8 bytes: both are longer than 7 (distinct lexemes hold no NUL) */
    Py_ssize_t n = x->length < y->length ? x->length : y->length;
    int c = memcmp(x->word + 8, y->word + 8, (size_t)(n - 8));
    return c != 0 ? c < 0 : x->length < y->length;
}

/* Sorted in place: quicksort down to runs of 16, then insertion sort (a document's ~30-50 lexemes). */
static void sort_lexemes(Lexeme *a, Py_ssize_t n) {
    while (n > 16) {
        Lexeme pivot = a[n / 2], tmp;
        Py_ssize_t i = 0, j = n - 1;
        for (;;) {
            while (lexeme_less(&a[i], &pivot)) i++;
            while (lexeme_less(&pivot, &a[j])) j--;
            if (i >= j) break;
            tmp = a[i], a[i] = a[j], a[j] = tmp;
            i++, j--;
        }
        /* a[0..j] <= pivot <= a[j+1..n): the smaller side by recursion, the larger by the loop */
        if (j + 1 < n - j - 1) {
            sort_lexemes(a, j + 1);
            a += j + 1, n -= j + 1;
        } else {
            sort_lexemes(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        Lexeme x = a[i];
        Py_ssize_t j = i;
        for (; j > 0 && lexeme_less(&x, &a[j - 1]); j--) a[j] = a[j - 1];
        a[j] = x;
    }
}

/* The vector of the lexemes in the table (written in the buffer, from byte 4, in the order met), in
   PostgreSQL's order: tsvectorrecv then checks the order instead of sorting them (~2.5 us of the
   backend's CPU per benchmark span). */
static PyObject *sorted_vector(const Table *t, const Buffer *b) {
    Lexeme *lexemes = PyMem_Malloc((t->used ? t->used : 1) * sizeof(Lexeme));
    if (lexemes == NULL) return PyErr_NoMemory();
    size_t count = 0;
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->slots[i].hash == 0) continue;
        const char *word = b->data + t->slots[i].start;
        Py_ssize_t length = t->slots[i].length;
        lexemes[count++] = (Lexeme){sort_key(word, length), word, length};
    }
    sort_lexemes(lexemes, (Py_ssize_t)count);
    PyObject *result = PyBytes_FromStringAndSize(NULL, b->size);
    if (result != NULL) {
        char *out = PyBytes_AS_STRING(result);
        out[0] = (char)(count >> 24);
        out[1] = (char)(count >> 16);
        out[2] = (char)(count >> 8);
        out[3] = (char)count;
        out += 4;
        for (size_t i = 0; i < count; i++) {
            memcpy(out, lexemes[i].word, (size_t)lexemes[i].length);
            out += lexemes[i].length;
            memset(out, 0, 3); /* its NUL and its number of positions, 0 */
            out += 3;
        }
    }
    PyMem_Free(lexemes);
    return result;
}

/* tsvector(document, max_lexeme_bytes): the distinct words of `document` (runs of letters and digits:
   the characters `str.isalnum()` takes, as the reference's `[^\W_]+`), each in lower case
   (`str.lower()`) as UTF-8, those of more than `max_lexeme_bytes` left out, in tsvector's binary
   form: their number (32 bits, big-endian), then each one NUL-terminated and followed by a 16-bit 0
   (no positions), in PostgreSQL's order (sorted bytewise, a prefix first). Reference:
   pilothouse.store.search.document_vector. */
static PyObject *tsvector(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "tsvector(document: str, max_lexeme_bytes: int)");
        return NULL;
    }
    PyObject *text = args[0];
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[1]);
    if (max_bytes == -1 && PyErr_Occurred()) return NULL;
    if (PyUnicode_READY(text) < 0) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    int ascii = PyUnicode_IS_ASCII(text);

    PyObject *result = NULL;
    Buffer b = {NULL, 0, 0};
    Table t = {NULL, 63, 0};
    t.slots = PyMem_Calloc(t.mask + 1, sizeof(Slot));
    if (t.slots == NULL || reserve(&b, 4 + (n < 4096 ? n : 4096)) < 0) { /* most documents fit */
        if (t.slots == NULL) PyErr_NoMemory();
        goto done;
    }
    b.size = 4; /* the count, written at the end */
    if (ascii) { /* most documents: one byte a character, lowered by a table */
        const Py_UCS1 *s = (const Py_UCS1 *)data;
        /* at most (n + 1) / 2 words, each with 3 bytes after it */
        if (reserve(&b, n + 3 * ((n + 1) / 2)) < 0) goto done;
        Py_ssize_t i = 0;
        while (i < n) {
            if (LOWERED[s[i]] == 0) {
                i++;
                continue;
            }
            Py_ssize_t start = b.size;
            char *out = b.data + start;
            for (unsigned char ch; i < n && (ch = LOWERED[s[i]]) != 0; i++) *out++ = (char)ch;
            b.size = out - b.data;
            if (keep_word(&t, &b, start, max_bytes) < 0) goto done;
        }
    }
    for (Py_ssize_t i = 0; !ascii && i < n;) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128 ? LOWERED[c] == 0 : !Py_UNICODE_ISALNUM(c)) {
            i++;
            continue;
        }
        Py_ssize_t from = i, start = b.size;
        int plain = 1; /* only ASCII characters in the word: lowered here */
        for (; i < n; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            if (ch < 128) {
                if (LOWERED[ch] == 0) break;
            } else if (Py_UNICODE_ISALNUM(ch)) {
                plain = 0;
            } else {
                break;
            }
        }
        if (plain) {
            if (reserve(&b, i - from) < 0) goto done;
            for (Py_ssize_t k = from; k < i; k++) b.data[b.size++] = (char)LOWERED[PyUnicode_READ(kind, data, k)];
        } else if (write_lowered(&b, text, from, i) < 0) {
            goto done;
        }
        if (keep_word(&t, &b, start, max_bytes) < 0) goto done;
    }
    if (t.used > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many lexemes for a tsvector");
        goto done;
    }
    result = sorted_vector(&t, &b);
done:
    PyMem_Free(b.data);
    PyMem_Free(t.slots);
    return result;
}

static PyMethodDef methods[] = {
    {"tsvector", (PyCFunction)(void (*)(void))tsvector, METH_FASTCALL,
     "tsvector(document, max_lexeme_bytes): the distinct lower-case words of document as a binary "
     "tsvector, as store.search.document_vector."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_search_words", "A span's search words as a binary tsvector, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__search_words(void) {
    for (int c = 0; c < 128; c++) LOWERED[c] = ascii_alnum(c) ? (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c) : 0;
    return PyModule_Create(&module_def);
}
