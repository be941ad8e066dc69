/*
 * kvtier._native: the CPython binding of libkvtier, under the pure-Python
 * API in kvtier/__init__.py. Its job is to call libkvtier with as little
 * overhead as Python allows and to make the shared-memory pages safe to
 * hold from Python, whatever the caller does:
 *   - a page is handed out as a Page, a buffer exporter; memoryviews, numpy
 *     arrays and torch tensors are made from it with no copy. Once its
 *     lease is released, its reservation committed or aborted, or its
 *     client closed, the Page refuses new views;
 *   - every Page holds the client's Maps, which owns the segment mappings
 *     libkvtier is done with (kvt_keep_segments: a segment remapped for a
 *     new generation, and all of them at kvt_close) and unmaps them only
 *     when the last Page and the Client are gone. So close() ends the
 *     session at once, and no view, however it was made or kept, faults;
 *   - a namespace's page size is the daemon's, recorded when this client
 *     opened it: a caller cannot make a Page longer than its slot;
 *   - integers are range-checked, never wrapped.
 * Calls that wait on the daemon release the GIL. Threads: a Client may be
 * used from several threads (libkvtier serializes its calls); close() from
 * one thread while others are in a call is deferred until they return.
 * After fork, a child's calls raise (gRPC cannot cross fork).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>
#ifdef KVT_PY_CUDA
#include <kvtier/cuda.h>
#endif

#include "kv_layout.h"

/* ---- errors: -errno -> the kvtier.Error subclass registered for it ---- */

static PyObject *error_base;   /* kvtier.Error, set by _set_errors */
static PyObject *error_classes; /* dict: errno (int) -> class */

static PyObject *raise_errno(int rc, const char *msg)
{
	PyObject *key = PyLong_FromLong(-rc), *cls = NULL;

	if (key && error_classes)
		cls = PyDict_GetItemWithError(error_classes, key);
	Py_XDECREF(key);
	if (PyErr_Occurred())
		return NULL;
	if (!cls)
		cls = error_base ? error_base : PyExc_RuntimeError;
	PyObject *args = Py_BuildValue("(is)", -rc, msg ? msg : strerror(-rc));

	if (args) {
		PyErr_SetObject(cls, args);
		Py_DECREF(args);
	}
	return NULL;
}

/* A bad argument: kvtier.InvalidArgument (also a ValueError). */
__attribute__((format(printf, 1, 2))) static PyObject *invalid(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	PyOS_vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return raise_errno(-EINVAL, msg);
}

static const char forked_msg[] =
	"the client was made before fork: a forked process must connect anew (gRPC forbids using it)";

/* ---- integers: checked, never wrapped (PyArg's "I" and "K" wrap) ---- */

/*
 * *out = o, an int (or anything with __index__) in lo..hi. Else TypeError,
 * or kvtier.InvalidArgument naming `what` and the range.
 */
static int get_uint(PyObject *o, const char *what, unsigned long long lo,
		    unsigned long long hi, unsigned long long *out)
{
	PyObject *i = PyNumber_Index(o);
	unsigned long long v = 0;
	long long s;
	char got[32];
	bool ok = true;
	int ovf;

	if (!i) {
		if (PyErr_ExceptionMatches(PyExc_TypeError)) {
			PyErr_Clear();
			PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
				     Py_TYPE(o)->tp_name);
		}
		return -1;
	}
	s = PyLong_AsLongLongAndOverflow(i, &ovf);
	if (ovf > 0) {
		v = PyLong_AsUnsignedLongLong(i);
		if (PyErr_Occurred()) {
			PyErr_Clear();
			ok = false;
		}
	} else if (ovf < 0 || s < 0) {
		ok = false;
	} else {
		v = (unsigned long long)s;
	}
	if (PyErr_Occurred()) {
		Py_DECREF(i);
		return -1;
	}
	Py_DECREF(i);
	if (ok && v >= lo && v <= hi) {
		*out = v;
		return 0;
	}
	if (ovf == 0)
		snprintf(got, sizeof(got), "%lld", s);
	else if (ok)
		snprintf(got, sizeof(got), "%llu", v);
	else
		snprintf(got, sizeof(got), "%s", ovf < 0 ? "less" : "more");
	invalid("%s must be in %llu..%llu (got %s)", what, lo, hi, got);
	return -1;
}

/* ---- Maps: the client's segment mappings, kept while a Page lives ---- */

struct mapping {
	void *base;
	size_t len;
};

typedef struct {
	PyObject_HEAD
	pid_t pid;   /* the process that connected */
	bool closed; /* the client is closed: its Pages make no new views */
	struct mapping *kept; /* those libkvtier is done with, unmapped here */
	size_t nkept, cap;
} Maps;

static PyTypeObject Maps_Type;

/* kvt_keep_segments' hook. Runs without the GIL, inside a libkvtier call
 * (one at a time), never after the Client's kvt_close: the Client holds
 * the Maps until then. */
static void maps_keep(void *arg, void *base, size_t len)
{
	Maps *m = arg;

	if (m->nkept == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 16;
		struct mapping *k = realloc(m->kept, cap * sizeof(*k));

		if (!k)
			return; /* never unmapped: address space lost, nothing unsafe */
		m->kept = k;
		m->cap = cap;
	}
	m->kept[m->nkept++] = (struct mapping){ base, len };
}

static Maps *maps_new(void)
{
	Maps *m = PyObject_New(Maps, &Maps_Type);

	if (!m)
		return NULL;
	m->pid = getpid();
	m->closed = false;
	m->kept = NULL;
	m->nkept = m->cap = 0;
	return m;
}

/* The last Page and the Client are gone: nothing points into these now. */
static void Maps_dealloc(Maps *m)
{
	for (size_t i = 0; i < m->nkept; i++)
		munmap(m->kept[i].base, m->kept[i].len);
	free(m->kept);
	PyObject_Free(m);
}

static PyTypeObject Maps_Type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kvtier._native._Maps",
	.tp_basicsize = sizeof(Maps),
	.tp_dealloc = (destructor)Maps_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A client's segment mappings, alive while any of its pages is.",
};

/* ---- Client ---- */

typedef struct {
	PyObject_HEAD
	kvt_client *c;     /* NULL once closed */
	Maps *maps;
	PyObject *page_bytes; /* dict: namespace id -> page_bytes, as opened */
	pid_t pid;         /* the process that connected */
	int busy;          /* calls in flight (with the GIL released) */
	bool closing;      /* close() was called: no more calls */
	bool attaching;    /* kvt_attach is not to be called twice at once */
#ifdef KVT_PY_CUDA
	kvt_cuda *cuda; /* bound to a GPU (cuda_bind), or NULL */
#endif
} Client;

static PyTypeObject Client_Type;

/* Closes for real once close() was called and no call is in flight (it
 * would use the freed client). In a forked child, never: the session is
 * the parent's. */
static void client_finish(Client *self)
{
	if (self->c && self->closing && self->busy == 0 && self->pid == getpid()) {
		kvt_client *c = self->c;
#ifdef KVT_PY_CUDA
		kvt_cuda *cuda = self->cuda;

		self->cuda = NULL;
#endif
		self->c = NULL;
		Py_BEGIN_ALLOW_THREADS
#ifdef KVT_PY_CUDA
		if (cuda)
			kvt_cuda_close(cuda); /* before kvt_close */
#endif
		kvt_close(c); /* its mappings go to self->maps */
		Py_END_ALLOW_THREADS
	}
}

/* Whether the client can be called now (no exception set). */
static bool client_usable(const Client *self)
{
	return self->c && !self->closing && self->pid == getpid();
}

/* Before a call: 0, counted in flight; else raises kvtier.Closed. */
static int client_enter(Client *self)
{
	if (self->pid != getpid()) {
		raise_errno(-EBADF, forked_msg);
		return -1;
	}
	if (!client_usable(self)) {
		raise_errno(-EBADF, "the client is closed");
		return -1;
	}
	self->busy++;
	return 0;
}

/* After a call: returns ret, closing the client if close() came meanwhile. */
static PyObject *client_leave(Client *self, PyObject *ret)
{
	self->busy--;
	client_finish(self);
	return ret;
}

/* The failed call's error (before client_leave: it reads the client). */
static PyObject *client_fail(Client *self, int rc)
{
	return raise_errno(rc, kvt_errmsg(self->c));
}

static PyObject *Client_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *names[] = { "addr", NULL };
	const char *addr = NULL;
	Client *self;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|z", names, &addr))
		return NULL;
	self = (Client *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->pid = getpid();
	self->maps = maps_new();
	self->page_bytes = PyDict_New();
	if (!self->maps || !self->page_bytes) {
		Py_DECREF(self);
		return NULL;
	}
	if ((rc = kvt_connect(addr, &self->c)) < 0) {
		self->c = NULL;
		Py_DECREF(self);
		return raise_errno(rc, "cannot create a client");
	}
	kvt_keep_segments(self->c, maps_keep, self->maps);
	return (PyObject *)self;
}

static void Client_dealloc(Client *self)
{
	/* No call is in flight: each holds a reference. */
	self->closing = true;
	if (self->maps)
		self->maps->closed = true;
	client_finish(self);
	Py_XDECREF(self->maps); /* after kvt_close, which hands it the mappings */
	Py_XDECREF(self->page_bytes);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Client_attach(Client *self, PyObject *args)
{
	const char *name;
	PyObject *ret;
	int rc;

	if (!PyArg_ParseTuple(args, "s", &name))
		return NULL;
	if (self->attaching)
		return invalid("attach() is already in progress in another thread");
	if (client_enter(self) < 0)
		return NULL;
	self->attaching = true;
	Py_BEGIN_ALLOW_THREADS
#ifdef KVT_PY_CUDA
	if (self->cuda)
		rc = kvt_cuda_attach(self->cuda, name);
	else
#endif
		rc = kvt_attach(self->c, name);
	Py_END_ALLOW_THREADS
	self->attaching = false;
	ret = rc < 0 ? client_fail(self, rc) : PyUnicode_FromString(kvt_tenant(self->c));
	return client_leave(self, ret);
}

static PyObject *Client_close(Client *self, PyObject *unused)
{
	(void)unused;
	self->closing = true;
	self->maps->closed = true; /* in a child, the child's copy only */
	client_finish(self);       /* or the last call in flight will */
	Py_RETURN_NONE;
}

static PyObject *Client_health(Client *self, PyObject *unused)
{
	int rc;

	(void)unused;
	if (client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_health(self->c);
	Py_END_ALLOW_THREADS
	return client_leave(self, rc < 0 ? client_fail(self, rc) : Py_NewRef(Py_None));
}

static PyObject *Client_set_timeout_ms(Client *self, PyObject *arg)
{
	unsigned long long ms;

	if (get_uint(arg, "timeout_ms", 1, INT32_MAX, &ms) < 0 || client_enter(self) < 0)
		return NULL;
	kvt_set_timeout_ms(self->c, (int)ms);
	return client_leave(self, Py_NewRef(Py_None));
}

static PyObject *Client_open_namespace(Client *self, PyObject *args)
{
	PyObject *pbo, *bto, *ttlo, *ret, *id = NULL, *pb = NULL;
	unsigned long long page_bytes, block_tokens, idle_ttl_ms;
	struct kvt_namespace ns;
	const char *name;
	int rc;

	if (!PyArg_ParseTuple(args, "sOOO", &name, &pbo, &bto, &ttlo) ||
	    get_uint(pbo, "page_bytes", 1, PY_SSIZE_T_MAX, &page_bytes) < 0 ||
	    get_uint(bto, "block_tokens", 1, UINT32_MAX, &block_tokens) < 0 ||
	    get_uint(ttlo, "idle_ttl_ms", 0, INT64_MAX, &idle_ttl_ms) < 0 ||
	    client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_open_namespace(self->c, name, page_bytes, (uint32_t)block_tokens,
				idle_ttl_ms, &ns);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_leave(self, client_fail(self, rc));
	/* The daemon's page size for this id: every later call uses it. */
	if ((uint64_t)ns.page_bytes > PY_SSIZE_T_MAX) {
		ret = raise_errno(-EIO, "the daemon's page size does not fit a buffer");
	} else if (!(id = PyLong_FromUnsignedLong(ns.id)) ||
		   !(pb = PyLong_FromUnsignedLongLong(ns.page_bytes)) ||
		   PyDict_SetItem(self->page_bytes, id, pb) < 0) {
		ret = NULL;
	} else {
		ret = Py_BuildValue("(IKKOO)", ns.id, (unsigned long long)ns.page_bytes,
				    (unsigned long long)ns.slot_stride,
				    ns.created ? Py_True : Py_False,
				    ns.shared ? Py_True : Py_False);
	}
	Py_XDECREF(id);
	Py_XDECREF(pb);
	return client_leave(self, ret);
}

/* ---- arguments ---- */

/*
 * A namespace as the Python layer passes it, (id, page_bytes), or its id:
 * one this client opened, with the page size the daemon gave it then (a
 * page_bytes passed along must agree).
 */
static int parse_ns(Client *self, PyObject *o, struct kvt_namespace *ns)
{
	PyObject *ido = o, *pbo = NULL, *key, *known;
	unsigned long long id, pb;

	memset(ns, 0, sizeof(*ns));
	if (PyTuple_Check(o) &&
	    !PyArg_ParseTuple(o, "OO;a namespace is (id, page_bytes)", &ido, &pbo))
		return -1;
	if (get_uint(ido, "namespace id", 0, UINT32_MAX, &id) < 0 ||
	    !(key = PyLong_FromUnsignedLongLong(id)))
		return -1;
	known = PyDict_GetItemWithError(self->page_bytes, key);
	Py_DECREF(key);
	if (!known) {
		if (!PyErr_Occurred())
			invalid("namespace id %llu was not opened by this client (Client.namespace)", id);
		return -1;
	}
	ns->id = (uint32_t)id;
	ns->page_bytes = PyLong_AsUnsignedLongLong(known);
	if (pbo) {
		if (get_uint(pbo, "page_bytes", 0, UINT64_MAX, &pb) < 0)
			return -1;
		if (pb != ns->page_bytes) {
			invalid("namespace %llu has pages of %llu bytes, not %llu", id,
				(unsigned long long)ns->page_bytes, pb);
			return -1;
		}
	}
	return 0;
}

/*
 * Keys: one bytes-like object of n * 16 bytes, or a sequence of 16-byte
 * bytes-like objects. *keys is malloc'ed (free it); *n its count.
 */
static int parse_keys(PyObject *o, struct kvt_key **keys, size_t *n,
		      const char *what)
{
	Py_buffer b;

	*keys = NULL;
	*n = 0;
	if (PyObject_CheckBuffer(o)) {
		if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0)
			return -1;
		if (b.len == 0 || b.len % KVT_KEY_SIZE) {
			PyBuffer_Release(&b);
			invalid("%s: %zd bytes is not a whole, non-zero number of 16-byte keys",
				     what, b.len);
			return -1;
		}
		*n = (size_t)b.len / KVT_KEY_SIZE;
		*keys = malloc((size_t)b.len);
		if (*keys)
			memcpy(*keys, b.buf, (size_t)b.len);
		PyBuffer_Release(&b);
		if (!*keys) {
			PyErr_NoMemory();
			return -1;
		}
		return 0;
	}
	PyObject *seq = PySequence_Fast(o, "keys must be bytes or a sequence of 16-byte keys");

	if (!seq)
		return -1;
	Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);

	if (len == 0) {
		Py_DECREF(seq);
		invalid("%s: no keys", what);
		return -1;
	}
	*keys = malloc(sizeof(**keys) * (size_t)len);
	if (!*keys) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (Py_ssize_t i = 0; i < len; i++) {
		PyObject *k = PySequence_Fast_GET_ITEM(seq, i);

		if (PyObject_GetBuffer(k, &b, PyBUF_SIMPLE) < 0) {
			PyErr_Clear();
			invalid("%s[%zd] must be 16 bytes, not %.100s", what, i, Py_TYPE(k)->tp_name);
			goto bad;
		}
		if (b.len != KVT_KEY_SIZE) {
			invalid("%s[%zd] is %zd bytes, not 16",
				     what, i, b.len);
			PyBuffer_Release(&b);
			goto bad;
		}
		memcpy((*keys)[i].bytes, b.buf, KVT_KEY_SIZE);
		PyBuffer_Release(&b);
	}
	*n = (size_t)len;
	Py_DECREF(seq);
	return 0;
bad:
	Py_DECREF(seq);
	free(*keys);
	*keys = NULL;
	return -1;
}

/* A keyed call's namespace and keys parsed, then the client entered: 0
 * with *keys to free, or -1 with the exception set and nothing to free. */
static int enter_keyed(Client *self, PyObject *nso, PyObject *keyso,
		       struct kvt_namespace *ns, struct kvt_key **keys, size_t *n)
{
	if (parse_ns(self, nso, ns) < 0 || parse_keys(keyso, keys, n, "keys") < 0)
		return -1;
	if (client_enter(self) < 0) {
		free(*keys);
		return -1;
	}
	return 0;
}

/* An optional parent key: None or 16 bytes. */
static int parse_parent(PyObject *o, struct kvt_key *parent, bool *has)
{
	Py_buffer b;

	*has = false;
	if (o == Py_None)
		return 0;
	if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0) {
		PyErr_Clear();
		invalid("parent must be 16 bytes, not %.100s", Py_TYPE(o)->tp_name);
		return -1;
	}
	if (b.len != KVT_KEY_SIZE) {
		invalid("parent is %zd bytes, not 16", b.len);
		PyBuffer_Release(&b);
		return -1;
	}
	memcpy(parent->bytes, b.buf, KVT_KEY_SIZE);
	PyBuffer_Release(&b);
	*has = true;
	return 0;
}

/* Retention as the Python layer passes it: priority (None: the daemon's
 * default, none sent) and duration_ms. */
static int parse_retention(PyObject *prio_o, PyObject *dur_o, struct kvt_retention *r,
			   bool *has)
{
	unsigned long long prio, dur;

	memset(r, 0, sizeof(*r));
	*has = prio_o != Py_None;
	if (!*has)
		return 0;
	if (get_uint(prio_o, "priority", 0, 100, &prio) < 0 ||
	    get_uint(dur_o, "duration_ms", 0, INT64_MAX, &dur) < 0)
		return -1;
	r->priority = (unsigned)prio;
	r->duration_ms = dur;
	return 0;
}

/* ---- Page: one page of shared memory, exported as a buffer ---- */

typedef struct {
	PyObject_HEAD
	Maps *maps; /* keeps the memory mapped while this Page lives */
	void *ptr;
	Py_ssize_t len;
	bool readonly, revoked;
	bool device; /* in GPU memory (the daemon's hbm pool): no host view */
} Page;

static PyTypeObject Page_Type;

static PyObject *page_new(Maps *maps, void *ptr, uint64_t len, bool readonly, bool device)
{
	Page *p = PyObject_New(Page, &Page_Type);

	if (!p)
		return NULL;
	Py_INCREF(maps);
	p->maps = maps;
	p->ptr = ptr;
	p->len = (Py_ssize_t)len; /* parse_ns: fits */
	p->readonly = readonly;
	p->revoked = false;
	p->device = device;
	return (PyObject *)p;
}

static void Page_dealloc(Page *p)
{
	Py_XDECREF(p->maps);
	PyObject_Free(p);
}

static int Page_getbuffer(Page *p, Py_buffer *view, int flags)
{
	const char *why = NULL;

	if (p->device)
		why = "this page is in GPU memory (the daemon's hbm pool on the client's GPU): it has no host view; onload it into a cache on that GPU (Namespace.onload)";
	else if (p->revoked)
		why = "this page's lease or reservation is over: its memory is no longer yours";
	else if (p->maps->pid != getpid())
		why = forked_msg;
	else if (p->maps->closed)
		why = "this page's client is closed: its memory is no longer yours";
	if (why) {
		PyErr_SetString(PyExc_BufferError, why);
		view->obj = NULL;
		return -1;
	}
	/* No release hook: the Page (held by the view) holds the memory. */
	return PyBuffer_FillInfo(view, (PyObject *)p, p->ptr, p->len, p->readonly, flags);
}

static PyObject *Page_revoke(Page *p, PyObject *unused)
{
	(void)unused;
	p->revoked = true;
	Py_RETURN_NONE;
}

static PyObject *Page_get_revoked(Page *p, void *closure)
{
	(void)closure;
	return PyBool_FromLong(p->revoked || p->maps->closed);
}

static PyObject *Page_get_device(Page *p, void *closure)
{
	(void)closure;
	return PyBool_FromLong(p->device);
}

static Py_ssize_t Page_len(Page *p)
{
	return p->len;
}

static PyBufferProcs Page_buffer = {
	(getbufferproc)Page_getbuffer,
	NULL,
};

static PyMethodDef Page_methods[] = {
	{ "revoke", (PyCFunction)Page_revoke, METH_NOARGS,
	  "No new views from now on (the lease or reservation is over)." },
	{ NULL },
};

static PyGetSetDef Page_getset[] = {
	{ "revoked", (getter)Page_get_revoked, NULL, "No new views can be made.", NULL },
	{ "device", (getter)Page_get_device, NULL,
	  "In GPU memory (the daemon's hbm pool): no host view.", NULL },
	{ NULL },
};

static PySequenceMethods Page_seq = { .sq_length = (lenfunc)Page_len };

static PyTypeObject Page_Type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kvtier._native.Page",
	.tp_basicsize = sizeof(Page),
	.tp_dealloc = (destructor)Page_dealloc,
	.tp_as_buffer = &Page_buffer,
	.tp_as_sequence = &Page_seq,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "One KV page in the daemon's shared memory (a buffer: memoryview(page)).",
	.tp_methods = Page_methods,
	.tp_getset = Page_getset,
};

/* ---- calls on keys ---- */

static PyObject *Client_lookup(Client *self, PyObject *args)
{
	PyObject *nso, *keyso;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	size_t n, ready = 0, pending = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) ||
	    enter_keyed(self, nso, keyso, &ns, &keys, &n) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_lookup(self->c, &ns, keys, n, &ready, &pending);
	Py_END_ALLOW_THREADS
	free(keys);
	return client_leave(self, rc < 0 ? client_fail(self, rc) :
				 Py_BuildValue("(nn)", (Py_ssize_t)ready, (Py_ssize_t)pending));
}

/* lookup, and the tier of each ready block by name. */
static PyObject *Client_lookup_where(Client *self, PyObject *args)
{
	static const char *const names[] = { "?", "host", "hbm", "nvme", "remote" };
	PyObject *nso, *keyso, *list = NULL;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	enum kvt_where *where;
	size_t n, ready = 0, pending = 0;
	int rc = -ENOMEM;

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) ||
	    enter_keyed(self, nso, keyso, &ns, &keys, &n) < 0)
		return NULL;
	where = calloc(n ? n : 1, sizeof(*where));
	if (where) {
		Py_BEGIN_ALLOW_THREADS
		rc = kvt_lookup_where(self->c, &ns, keys, n, &ready, &pending, where);
		Py_END_ALLOW_THREADS
	}
	free(keys);
	if (rc == 0 && (list = PyList_New((Py_ssize_t)ready))) {
		for (size_t i = 0; i < ready; i++) {
			unsigned w = where[i] < 5 ? (unsigned)where[i] : 0;

			PyList_SET_ITEM(list, (Py_ssize_t)i, PyUnicode_FromString(names[w]));
		}
	}
	free(where);
	if (rc < 0)
		return client_leave(self, client_fail(self, rc));
	return client_leave(self, list ? Py_BuildValue("(nnN)", (Py_ssize_t)ready,
						      (Py_ssize_t)pending, list) : NULL);
}

/* The C loop of lookup, for the binding's cost beside C: seconds per call. */
static PyObject *Client_bench_lookup(Client *self, PyObject *args)
{
	PyObject *nso, *keyso, *iterso;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	size_t n, ready, pending;
	struct timespec t0, t1;
	unsigned long long iters;
	int rc = 0;

	if (!PyArg_ParseTuple(args, "OOO", &nso, &keyso, &iterso) ||
	    get_uint(iterso, "iters", 1, INT32_MAX, &iters) < 0 ||
	    enter_keyed(self, nso, keyso, &ns, &keys, &n) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long long i = 0; i < iters && rc == 0; i++)
		rc = kvt_lookup(self->c, &ns, keys, n, &ready, &pending);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	Py_END_ALLOW_THREADS
	free(keys);
	return client_leave(self, rc < 0 ? client_fail(self, rc) :
		PyFloat_FromDouble(((double)(t1.tv_sec - t0.tv_sec) +
				    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9) / (double)iters));
}

/* (keys, fn) calls that return nothing: commit, abort. */
static PyObject *keys_call(Client *self, PyObject *args,
			   int (*fn)(kvt_client *, const struct kvt_namespace *,
				     const struct kvt_key *, size_t))
{
	PyObject *nso, *keyso;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	size_t n;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) ||
	    enter_keyed(self, nso, keyso, &ns, &keys, &n) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = fn(self->c, &ns, keys, n);
	Py_END_ALLOW_THREADS
	free(keys);
	return client_leave(self, rc < 0 ? client_fail(self, rc) : Py_NewRef(Py_None));
}

static PyObject *Client_commit(Client *self, PyObject *args)
{
	return keys_call(self, args, kvt_commit);
}

static PyObject *Client_abort(Client *self, PyObject *args)
{
	return keys_call(self, args, kvt_abort);
}

/* [(state, Page|None)] of a Reserve's slots. */
static PyObject *slot_list(Client *self, const struct kvt_namespace *ns,
			   const struct kvt_slot *slots, size_t n)
{
	PyObject *out = PyList_New((Py_ssize_t)n);

	for (size_t i = 0; out && i < n; i++) {
		PyObject *page = Py_None, *item;

		if (slots[i].state == KVT_SLOT_RESERVED) {
			page = page_new(self->maps, slots[i].page, ns->page_bytes, false, false);
			if (!page) {
				Py_CLEAR(out);
				break;
			}
		} else {
			Py_INCREF(page);
		}
		item = Py_BuildValue("(iN)", (int)slots[i].state, page);
		if (!item) {
			Py_CLEAR(out);
			break;
		}
		PyList_SET_ITEM(out, (Py_ssize_t)i, item);
	}
	return out;
}

/* reserve(ns, parent, keys, priority, duration_ms) -> [(state, Page|None)] */
static PyObject *Client_reserve(Client *self, PyObject *args)
{
	PyObject *nso, *parento, *keyso, *prio_o, *dur_o, *out;
	struct kvt_retention ret;
	struct kvt_namespace ns;
	struct kvt_key *keys, parent;
	struct kvt_slot *slots;
	bool has_parent, has_ret;
	size_t n;
	int rc;

	if (!PyArg_ParseTuple(args, "OOOOO", &nso, &parento, &keyso, &prio_o, &dur_o) ||
	    parse_ns(self, nso, &ns) < 0 || parse_parent(parento, &parent, &has_parent) < 0 ||
	    parse_retention(prio_o, dur_o, &ret, &has_ret) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	slots = calloc(n, sizeof(*slots));
	if (!slots) {
		free(keys);
		return PyErr_NoMemory();
	}
	if (client_enter(self) < 0) {
		free(keys);
		free(slots);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_reserve(self->c, &ns, has_parent ? &parent : NULL, keys, n,
			 has_ret ? &ret : NULL, slots);
	Py_END_ALLOW_THREADS
	out = rc < 0 ? client_fail(self, rc) : slot_list(self, &ns, slots, n);
	if (!out && rc == 0) {
		/* No list for the caller to abort from: give the slots up. */
		PyObject *type, *value, *tb;

		PyErr_Fetch(&type, &value, &tb);
		Py_BEGIN_ALLOW_THREADS
		for (size_t i = 0; i < n; i++)
			if (slots[i].state == KVT_SLOT_RESERVED)
				kvt_abort(self->c, &ns, &keys[i], 1);
		Py_END_ALLOW_THREADS
		PyErr_Restore(type, value, tb);
	}
	free(keys);
	free(slots);
	return client_leave(self, out);
}

/* ---- Lease ---- */

typedef struct {
	PyObject_HEAD
	Client *client;
	struct kvt_lease lease;
	PyObject *pages; /* tuple of Page */
	bool released;
} Lease;

static PyTypeObject Lease_Type;

static void lease_revoke(Lease *l)
{
	for (Py_ssize_t i = 0; l->pages && i < PyTuple_GET_SIZE(l->pages); i++)
		((Page *)PyTuple_GET_ITEM(l->pages, i))->revoked = true;
}

/* The lease is over for Python; its pins are for the caller to release
 * (kvt_release) or are gone with the session. */
static void lease_forget(Lease *l)
{
	l->released = true;
	lease_revoke(l);
	free((void *)l->lease.pages);
	memset(&l->lease, 0, sizeof(l->lease));
}

/* Unpins through the daemon: the client is usable. 0 or -errno. */
static int lease_unpin(Lease *l)
{
	struct kvt_lease copy = l->lease;
	Client *cl = l->client;
	int rc;

	l->released = true;
	lease_revoke(l);
	memset(&l->lease, 0, sizeof(l->lease));
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_release(cl->c, &copy); /* frees copy.pages */
	Py_END_ALLOW_THREADS
	return rc;
}

static void Lease_dealloc(Lease *l)
{
	/* A lease dropped without release gives its pins back now; with its
	 * client closed (or in a forked child) there is nothing to give. */
	if (!l->released && l->client && client_usable(l->client)) {
		PyObject *type, *value, *tb;

		PyErr_Fetch(&type, &value, &tb);
		l->client->busy++;
		(void)lease_unpin(l);
		client_leave(l->client, NULL);
		PyErr_Restore(type, value, tb);
	} else if (!l->released) {
		lease_forget(l);
	}
	Py_XDECREF(l->pages);
	Py_XDECREF(l->client);
	PyObject_Free(l);
}

static PyObject *Lease_release(Lease *l, PyObject *unused)
{
	Client *cl = l->client;
	int rc;

	(void)unused;
	if (l->released)
		Py_RETURN_NONE;
	if (cl->pid != getpid())
		return raise_errno(-EBADF, forked_msg);
	if (!client_usable(cl)) {
		lease_forget(l); /* the session's end released the pins */
		Py_RETURN_NONE;
	}
	if (client_enter(cl) < 0)
		return NULL;
	rc = lease_unpin(l);
	return client_leave(cl, rc < 0 ? client_fail(cl, rc) : Py_NewRef(Py_None));
}

static PyObject *Lease_get_pages(Lease *l, void *closure)
{
	(void)closure;
	if (l->released)
		return raise_errno(-EBADF, "the lease was released: its pages are no longer yours");
	if (l->client->pid != getpid())
		return raise_errno(-EBADF, forked_msg);
	if (!client_usable(l->client))
		return raise_errno(-EBADF, "the client is closed: the lease's pins went with its session");
	for (size_t i = 0; i < l->lease.count; i++)
		if (l->lease.hbm && l->lease.hbm[i]) {
			char msg[256];

			snprintf(msg, sizeof(msg),
				 "page %zu of the lease is in GPU memory (the daemon's hbm pool): it has no host view; onload the lease into a cache on the client's GPU (Namespace.onload)",
				 i);
			return raise_errno(-EOPNOTSUPP, msg);
		}
	return Py_NewRef(l->pages);
}

static PyObject *Lease_get_hbm(Lease *l, void *closure)
{
	PyObject *t = PyTuple_New((Py_ssize_t)l->lease.count);

	(void)closure;
	for (size_t i = 0; t && i < l->lease.count; i++)
		PyTuple_SET_ITEM(t, (Py_ssize_t)i,
				 PyBool_FromLong(l->lease.hbm && l->lease.hbm[i]));
	return t;
}

static PyObject *Lease_get_count(Lease *l, void *closure)
{
	(void)closure;
	return PyLong_FromSsize_t(l->pages ? PyTuple_GET_SIZE(l->pages) : 0);
}

static PyObject *Lease_get_id(Lease *l, void *closure)
{
	(void)closure;
	return PyLong_FromUnsignedLongLong(l->lease.id);
}

static PyObject *Lease_get_released(Lease *l, void *closure)
{
	(void)closure;
	return PyBool_FromLong(l->released);
}

static PyMethodDef Lease_methods[] = {
	{ "release", (PyCFunction)Lease_release, METH_NOARGS,
	  "Unpins the blocks; the pages refuse new views from then on." },
	{ NULL },
};

static PyGetSetDef Lease_getset[] = {
	{ "pages", (getter)Lease_get_pages, NULL, "Tuple of Page, one per pinned key.", NULL },
	{ "hbm", (getter)Lease_get_hbm, NULL,
	  "Per page: in the daemon's hbm pool on the client's GPU (no host view).", NULL },
	{ "count", (getter)Lease_get_count, NULL, "Keys pinned: the ready prefix.", NULL },
	{ "id", (getter)Lease_get_id, NULL, "The daemon's lease id (0: nothing pinned).", NULL },
	{ "released", (getter)Lease_get_released, NULL, "release() was called.", NULL },
	{ NULL },
};

static PyTypeObject Lease_Type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kvtier._native.Lease",
	.tp_basicsize = sizeof(Lease),
	.tp_dealloc = (destructor)Lease_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Pinned blocks: read-only pages until release().",
	.tp_methods = Lease_methods,
	.tp_getset = Lease_getset,
};

/* A Lease over kl (taken: freed or released on failure), its pages
 * page_bytes each; pages in GPU memory make Pages with no host view. */
static PyObject *lease_new(Client *self, struct kvt_lease *kl, uint64_t page_bytes)
{
	Lease *l = PyObject_New(Lease, &Lease_Type);

	if (!l) {
		Py_BEGIN_ALLOW_THREADS
		kvt_release(self->c, kl); /* id 0 (the tests' lease): frees only */
		Py_END_ALLOW_THREADS
		return NULL;
	}
	l->client = (Client *)Py_NewRef(self);
	l->lease = *kl;
	l->released = false;
	l->pages = PyTuple_New((Py_ssize_t)kl->count);
	for (size_t i = 0; l->pages && i < kl->count; i++) {
		PyObject *p = page_new(self->maps, (void *)kl->pages[i], page_bytes, true,
				       kl->hbm && kl->hbm[i]);

		if (!p) {
			Py_DECREF(l); /* releases the pins */
			return NULL;
		}
		PyTuple_SET_ITEM(l->pages, (Py_ssize_t)i, p);
	}
	if (!l->pages) {
		Py_DECREF(l);
		return NULL;
	}
	return (PyObject *)l;
}

static PyObject *Client_acquire(Client *self, PyObject *args)
{
	PyObject *nso, *keyso, *waito;
	struct kvt_namespace ns;
	struct kvt_lease kl;
	struct kvt_key *keys;
	unsigned long long wait_ms;
	size_t n;
	int rc;

	if (!PyArg_ParseTuple(args, "OOO", &nso, &keyso, &waito) ||
	    get_uint(waito, "wait_ms", 0, UINT32_MAX, &wait_ms) < 0 ||
	    enter_keyed(self, nso, keyso, &ns, &keys, &n) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_acquire(self->c, &ns, keys, n, (unsigned)wait_ms, &kl);
	Py_END_ALLOW_THREADS
	free(keys);
	return client_leave(self, rc < 0 ? client_fail(self, rc) :
				 lease_new(self, &kl, ns.page_bytes));
}

/*
 * For the tests of the GPU guard, which have no GPU: a Lease of n pages
 * flagged as in the hbm pool, at device-like addresses that no host access
 * may touch, pinning nothing (id 0).
 */
static PyObject *Client_hbm_lease_for_tests(Client *self, PyObject *arg)
{
	unsigned long long n;
	struct kvt_lease kl = { 0 };

	if (get_uint(arg, "n", 1, 64, &n) < 0)
		return NULL;
	/* libkvtier's layout: the pointers, then the flags, in one block. */
	kl.pages = calloc(n + 1, sizeof(*kl.pages) + 1);
	if (!kl.pages)
		return PyErr_NoMemory();
	kl.hbm = (const unsigned char *)(kl.pages + n + 1);
	for (size_t i = 0; i < n; i++) {
		kl.pages[i] = (const void *)(uintptr_t)(0x10 + 16 * i);
		((unsigned char *)kl.hbm)[i] = 1;
	}
	kl.count = n;
	return lease_new(self, &kl, 4096);
}

/* put(ns, parent, keys, pages, priority, duration_ms) -> stored */
static PyObject *Client_put(Client *self, PyObject *args)
{
	PyObject *nso, *parento, *keyso, *pageso, *prio_o, *dur_o, *seq = NULL, *result = NULL;
	struct kvt_retention ret;
	struct kvt_namespace ns;
	struct kvt_key *keys = NULL, parent;
	Py_buffer *bufs = NULL;
	const void **ptrs = NULL;
	size_t n, stored = 0, held = 0;
	bool has_parent, has_ret;
	int rc;

	if (!PyArg_ParseTuple(args, "OOOOOO", &nso, &parento, &keyso, &pageso,
			      &prio_o, &dur_o) ||
	    parse_ns(self, nso, &ns) < 0 || parse_parent(parento, &parent, &has_parent) < 0 ||
	    parse_retention(prio_o, dur_o, &ret, &has_ret) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	seq = PySequence_Fast(pageso, "pages must be a sequence of bytes-like objects");
	if (!seq)
		goto out;
	if ((size_t)PySequence_Fast_GET_SIZE(seq) != n) {
		invalid("%zd pages for %zu keys",
			     PySequence_Fast_GET_SIZE(seq), n);
		goto out;
	}
	bufs = calloc(n, sizeof(*bufs));
	ptrs = calloc(n, sizeof(*ptrs));
	if (!bufs || !ptrs) {
		PyErr_NoMemory();
		goto out;
	}
	for (; held < n; held++) {
		PyObject *p = PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)held);

		if (PyObject_GetBuffer(p, &bufs[held], PyBUF_C_CONTIGUOUS) < 0) {
			if (PyErr_ExceptionMatches(PyExc_BufferError) ||
			    PyErr_ExceptionMatches(PyExc_TypeError)) {
				PyObject *type, *value, *tb;

				PyErr_Fetch(&type, &value, &tb);
				PyErr_NormalizeException(&type, &value, &tb);
				PyObject *why = value ? PyObject_Str(value) : NULL;

				invalid("pages[%zu] is not a contiguous buffer: %s", held,
					why ? PyUnicode_AsUTF8(why) : "?");
				Py_XDECREF(why);
				Py_XDECREF(type);
				Py_XDECREF(value);
				Py_XDECREF(tb);
			}
			goto out;
		}
		if ((uint64_t)bufs[held].len != ns.page_bytes) {
			invalid("pages[%zu] is %zd bytes; the namespace's pages are %llu",
				     held, bufs[held].len, (unsigned long long)ns.page_bytes);
			PyBuffer_Release(&bufs[held]);
			goto out;
		}
		ptrs[held] = bufs[held].buf;
	}
	if (client_enter(self) < 0)
		goto out;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_put(self->c, &ns, has_parent ? &parent : NULL, keys, ptrs, n,
		     has_ret ? &ret : NULL, &stored);
	Py_END_ALLOW_THREADS
	result = client_leave(self, rc < 0 ? client_fail(self, rc) : PyLong_FromSize_t(stored));
out:
	for (size_t i = 0; i < held; i++)
		PyBuffer_Release(&bufs[i]);
	free(bufs);
	free(ptrs);
	free(keys);
	Py_XDECREF(seq);
	return result;
}

/* get(ns, keys) -> list of bytes, one per key of the ready prefix */
static PyObject *Client_get(Client *self, PyObject *args)
{
	PyObject *nso, *keyso, *list = NULL;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	void **dst = NULL;
	size_t n, got = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || parse_ns(self, nso, &ns) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	list = PyList_New((Py_ssize_t)n);
	dst = calloc(n, sizeof(*dst));
	if (!list || !dst) {
		if (list)
			PyErr_NoMemory();
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ns.page_bytes);

		if (!b)
			goto fail;
		PyList_SET_ITEM(list, (Py_ssize_t)i, b);
		dst[i] = PyBytes_AS_STRING(b);
	}
	if (client_enter(self) < 0)
		goto fail;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_get(self->c, &ns, keys, n, dst, &got);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		client_fail(self, rc);
	client_leave(self, NULL);
	if (rc < 0)
		goto fail;
	free(keys);
	free(dst);
	if (PyList_SetSlice(list, (Py_ssize_t)got, (Py_ssize_t)n, NULL) < 0)
		Py_CLEAR(list);
	return list;
fail:
	free(keys);
	free(dst);
	Py_XDECREF(list);
	return NULL;
}

/* drop(ns, keys or None) -> dropped */
static PyObject *Client_drop(Client *self, PyObject *args)
{
	PyObject *nso, *keyso;
	struct kvt_namespace ns;
	struct kvt_key *keys = NULL;
	size_t n = 0, dropped = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || parse_ns(self, nso, &ns) < 0 ||
	    (keyso != Py_None && parse_keys(keyso, &keys, &n, "keys") < 0))
		return NULL;
	if (client_enter(self) < 0) {
		free(keys);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop(self->c, &ns, keys, n, &dropped);
	Py_END_ALLOW_THREADS
	free(keys);
	return client_leave(self, rc < 0 ? client_fail(self, rc) : PyLong_FromSize_t(dropped));
}

static PyObject *Client_drop_tenant(Client *self, PyObject *args)
{
	const char *tenant = NULL;
	size_t dropped = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "z", &tenant) || client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop_tenant(self->c, tenant, &dropped);
	Py_END_ALLOW_THREADS
	return client_leave(self, rc < 0 ? client_fail(self, rc) : PyLong_FromSize_t(dropped));
}

static PyObject *Client_drop_namespace(Client *self, PyObject *arg)
{
	unsigned long long id;
	size_t dropped = 0, pending = 0;
	int rc;

	if (get_uint(arg, "namespace_id", 0, UINT32_MAX, &id) < 0 || client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop_namespace(self->c, (uint32_t)id, &dropped, &pending);
	Py_END_ALLOW_THREADS
	return client_leave(self, rc < 0 ? client_fail(self, rc) :
				 Py_BuildValue("(nn)", (Py_ssize_t)dropped, (Py_ssize_t)pending));
}

/* Statistics gathered without the GIL (kvt_stats holds the client's lock
 * while it calls back: no Python there), made a dict after. */
struct stat_list {
	char **kv; /* name, value, name, value... */
	size_t n, cap;
	bool oom;
};

static void stat_cb(void *arg, const char *name, const char *value)
{
	struct stat_list *s = arg;

	if (s->oom)
		return;
	if (s->n + 2 > s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		char **kv = realloc(s->kv, cap * sizeof(*kv));

		if (!kv) {
			s->oom = true;
			return;
		}
		s->kv = kv;
		s->cap = cap;
	}
	s->kv[s->n] = strdup(name);
	s->kv[s->n + 1] = strdup(value);
	s->n += 2;
	if (!s->kv[s->n - 2] || !s->kv[s->n - 1])
		s->oom = true;
}

static PyObject *stat_dict(const struct stat_list *s)
{
	PyObject *d = PyDict_New();

	for (size_t i = 0; d && i < s->n; i += 2) {
		PyObject *v = PyUnicode_DecodeUTF8(s->kv[i + 1], (Py_ssize_t)strlen(s->kv[i + 1]),
						   "replace");

		if (!v || PyDict_SetItemString(d, s->kv[i], v) < 0)
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	return d;
}

/* kvt_stats_json's text (typed and nested), without the GIL. */
static PyObject *Client_stats_json(Client *self, PyObject *unused)
{
	PyObject *ret;
	char *json = NULL;
	int rc;

	(void)unused;
	if (client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_stats_json(self->c, &json);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		ret = client_fail(self, rc);
	else
		ret = PyUnicode_DecodeUTF8(json, (Py_ssize_t)strlen(json), "replace");
	free(json);
	return client_leave(self, ret);
}

static PyObject *Client_stats(Client *self, PyObject *unused)
{
	struct stat_list s = { 0 };
	PyObject *ret;
	int rc;

	(void)unused;
	if (client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_stats(self->c, stat_cb, &s);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		ret = client_fail(self, rc);
	else if (s.oom)
		ret = PyErr_NoMemory();
	else
		ret = stat_dict(&s);
	for (size_t i = 0; i < s.n; i++)
		free(s.kv[i]);
	free(s.kv);
	return client_leave(self, ret);
}

/* ---- the GPU data path (libkvtier-cuda), where built with CUDA ---- */

/* Block ids: a sequence of ints in 0..2^32-1. *ids malloc'ed, *n its count. */
static int parse_ids(PyObject *o, uint32_t **ids, size_t *n)
{
	PyObject *seq = PySequence_Fast(o, "block ids must be a sequence of ints");
	char what[48];

	*ids = NULL;
	if (!seq)
		return -1;
	*n = (size_t)PySequence_Fast_GET_SIZE(seq);
	*ids = calloc(*n + 1, sizeof(**ids));
	if (!*ids) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (size_t i = 0; i < *n; i++) {
		unsigned long long v;

		snprintf(what, sizeof(what), "block_ids[%zu]", i);
		if (get_uint(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i), what, 0,
			     UINT32_MAX, &v) < 0) {
			free(*ids);
			*ids = NULL;
			Py_DECREF(seq);
			return -1;
		}
		(*ids)[i] = (uint32_t)v;
	}
	Py_DECREF(seq);
	return 0;
}

#ifdef KVT_PY_CUDA
/* A cache layout as kvtier.kv passes it: (format, [base addresses],
 * num_layers, num_blocks, block_tokens, kv_heads, head_dim, dtype_bytes). */
static int parse_layout(PyObject *o, struct kvt_kv_layout *l)
{
	static const char *names[] = { "num_layers", "num_blocks", "block_tokens",
				       "kv_heads", "head_dim", "dtype_bytes" };
	PyObject *fmt_o, *bases_o, *dims_o[6];
	unsigned long long fmt, dims[6];
	const void *bases[KVT_KV_LAYERS_MAX];
	const char *why = NULL;
	Py_ssize_t nb;

	if (!PyArg_ParseTuple(o, "OO!OOOOOO;layout", &fmt_o, &PyList_Type, &bases_o,
			      &dims_o[0], &dims_o[1], &dims_o[2], &dims_o[3], &dims_o[4],
			      &dims_o[5]) ||
	    get_uint(fmt_o, "layout format", 0, UINT32_MAX, &fmt) < 0)
		return -1;
	for (int i = 0; i < 6; i++)
		if (get_uint(dims_o[i], names[i], 1, UINT32_MAX, &dims[i]) < 0)
			return -1;
	nb = PyList_GET_SIZE(bases_o);
	if (nb < 1 || nb > KVT_KV_LAYERS_MAX) {
		invalid("layout: 1..%d base addresses", KVT_KV_LAYERS_MAX);
		return -1;
	}
	for (Py_ssize_t i = 0; i < nb; i++) {
		bases[i] = PyLong_AsVoidPtr(PyList_GET_ITEM(bases_o, i));
		if (PyErr_Occurred())
			return -1;
	}
	if (kvt_kv_layout_init(l, (enum kvt_kv_format)fmt, bases, (uint32_t)dims[0],
			       (uint32_t)dims[1], (uint32_t)dims[2], (uint32_t)dims[3],
			       (uint32_t)dims[4], (uint32_t)dims[5], &why) < 0) {
		invalid("layout: %s", why);
		return -1;
	}
	return 0;
}

static PyObject *cuda_fail(Client *self, int rc)
{
	return raise_errno(rc, self->cuda ? kvt_cuda_errmsg(self->cuda) : kvt_errmsg(self->c));
}

static PyObject *Client_cuda_bind(Client *self, PyObject *args)
{
	PyObject *dev_o, *staging_o, *ret = NULL;
	unsigned long long device, staging;
	kvt_cuda *cuda = NULL;
	int rc;

	if (!PyArg_ParseTuple(args, "OO", &dev_o, &staging_o) ||
	    get_uint(dev_o, "device", 0, INT32_MAX, &device) < 0 ||
	    get_uint(staging_o, "staging_bytes", 0, INT64_MAX, &staging) < 0)
		return NULL;
	if (self->cuda)
		return invalid("the client is bound to a GPU already");
	if (client_enter(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_bind(self->c, (int)device, staging, &cuda);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		const char *why = kvt_errmsg(self->c);
		char msg[512];

		snprintf(msg, sizeof(msg), "cannot use CUDA device %llu: %s", device,
			 why && *why ? why : strerror(-rc));
		ret = raise_errno(rc, msg);
	} else {
		self->cuda = cuda;
		ret = Py_NewRef(Py_None);
	}
	return client_leave(self, ret);
}

/* cuda_offload(ns, layout, block_ids, keys, pages (Page or None per key),
 * stream): commits once the stream has passed the copy. */
static PyObject *Client_cuda_offload(Client *self, PyObject *args)
{
	PyObject *nso, *layout_o, *ids_o, *keys_o, *pages_o, *stream_o, *seq = NULL, *ret = NULL;
	struct kvt_namespace ns;
	struct kvt_kv_layout layout;
	struct kvt_key *keys = NULL;
	struct kvt_slot *slots = NULL;
	uint32_t *ids = NULL;
	unsigned long long stream;
	size_t n, nids;
	int rc;

	if (!PyArg_ParseTuple(args, "OOOOOO", &nso, &layout_o, &ids_o, &keys_o, &pages_o,
			      &stream_o) ||
	    get_uint(stream_o, "stream", 0, UINTPTR_MAX, &stream) < 0 ||
	    parse_ns(self, nso, &ns) < 0 ||
	    parse_layout(layout_o, &layout) < 0 || parse_ids(ids_o, &ids, &nids) < 0)
		return NULL;
	if (!self->cuda) {
		raise_errno(-EOPNOTSUPP, "the client is not bound to a GPU (connect with device=)");
		goto out;
	}
	if (kvt_kv_page_bytes(&layout) != ns.page_bytes) {
		invalid("the layout's pages are %llu bytes, the namespace's %llu",
			(unsigned long long)kvt_kv_page_bytes(&layout),
			(unsigned long long)ns.page_bytes);
		goto out;
	}
	if (parse_keys(keys_o, &keys, &n, "keys") < 0 ||
	    !(seq = PySequence_Fast(pages_o, "pages must be a sequence")))
		goto out;
	if (nids != n || (size_t)PySequence_Fast_GET_SIZE(seq) != n) {
		invalid("%zu keys, %zu block ids and %zd pages", n, nids,
			PySequence_Fast_GET_SIZE(seq));
		goto out;
	}
	slots = calloc(n, sizeof(*slots));
	if (!slots) {
		PyErr_NoMemory();
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		PyObject *p = PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i);

		if (p == Py_None) {
			slots[i].state = KVT_SLOT_PRESENT; /* skipped */
			continue;
		}
		if (!PyObject_TypeCheck(p, &Page_Type) || ((Page *)p)->revoked ||
		    ((Page *)p)->readonly || ((Page *)p)->maps != self->maps ||
		    (uint64_t)((Page *)p)->len != ns.page_bytes) {
			invalid("pages[%zu] is not a page of an open reservation of this client in this namespace", i);
			goto out;
		}
		slots[i].state = KVT_SLOT_RESERVED;
		slots[i].page = ((Page *)p)->ptr;
	}
	if (client_enter(self) < 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (slots[i].state == KVT_SLOT_RESERVED) /* committed by the library */
			((Page *)PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i))->revoked = true;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_offload(self->cuda, &ns, &layout, ids, keys, slots, n,
			      (cudaStream_t)(uintptr_t)stream);
	Py_END_ALLOW_THREADS
	ret = client_leave(self, rc < 0 ? cuda_fail(self, rc) : Py_NewRef(Py_None));
out:
	Py_XDECREF(seq);
	free(slots);
	free(keys);
	free(ids);
	return ret;
}

/* cuda_onload(layout, block_ids, lease, stream): the lease's pages into
 * the cache; the library releases the lease once the stream has passed the
 * copy (the Lease is over at once for Python). */
static PyObject *Client_cuda_onload(Client *self, PyObject *args)
{
	PyObject *layout_o, *ids_o, *lease_o, *stream_o;
	struct kvt_kv_layout layout;
	struct kvt_lease kl;
	unsigned long long stream;
	uint32_t *ids = NULL;
	Lease *l;
	size_t nids;
	int rc;

	if (!PyArg_ParseTuple(args, "OOO!O", &layout_o, &ids_o, &Lease_Type, &lease_o,
			      &stream_o) ||
	    get_uint(stream_o, "stream", 0, UINTPTR_MAX, &stream) < 0 ||
	    parse_layout(layout_o, &layout) < 0 || parse_ids(ids_o, &ids, &nids) < 0)
		return NULL;
	l = (Lease *)lease_o;
	if (!self->cuda || l->client != self || l->released || nids < l->lease.count) {
		free(ids);
		return self->cuda ? invalid("the lease is released, another client's, or has more pages than block ids")
				  : raise_errno(-EOPNOTSUPP, "the client is not bound to a GPU (connect with device=)");
	}
	if (l->lease.count && PyTuple_GET_SIZE(l->pages) &&
	    (uint64_t)((Page *)PyTuple_GET_ITEM(l->pages, 0))->len != kvt_kv_page_bytes(&layout)) {
		free(ids);
		return invalid("the layout's pages are %llu bytes, the lease's %zd",
			       (unsigned long long)kvt_kv_page_bytes(&layout),
			       ((Page *)PyTuple_GET_ITEM(l->pages, 0))->len);
	}
	if (client_enter(self) < 0) {
		free(ids);
		return NULL;
	}
	/* The library owns the lease from here. */
	kl = l->lease;
	memset(&l->lease, 0, sizeof(l->lease));
	l->released = true;
	lease_revoke(l);
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_onload(self->cuda, &layout, ids, &kl, (cudaStream_t)(uintptr_t)stream);
	Py_END_ALLOW_THREADS
	free(ids);
	return client_leave(self, rc < 0 ? cuda_fail(self, rc) : Py_NewRef(Py_None));
}

static PyObject *Client_cuda_sync(Client *self, PyObject *unused)
{
	int rc;

	(void)unused;
	if (client_enter(self) < 0)
		return NULL;
	if (!self->cuda)
		return client_leave(self, Py_NewRef(Py_None));
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_sync(self->cuda);
	Py_END_ALLOW_THREADS
	return client_leave(self, rc < 0 ? cuda_fail(self, rc) : Py_NewRef(Py_None));
}
#else
static PyObject *no_cuda(Client *self, PyObject *args) /* args NULL for cuda_sync */
{
	(void)self;
	(void)args;
	return raise_errno(-EOPNOTSUPP, "this kvtier was built without CUDA (libkvtier-cuda)");
}
#define Client_cuda_bind no_cuda
#define Client_cuda_offload no_cuda
#define Client_cuda_onload no_cuda
#define Client_cuda_sync no_cuda
#endif

static PyMethodDef Client_methods[] = {
	{ "cuda_bind", (PyCFunction)Client_cuda_bind, METH_VARARGS, NULL },
	{ "cuda_offload", (PyCFunction)Client_cuda_offload, METH_VARARGS, NULL },
	{ "cuda_onload", (PyCFunction)Client_cuda_onload, METH_VARARGS, NULL },
	{ "cuda_sync", (PyCFunction)Client_cuda_sync, METH_NOARGS, NULL },
	{ "attach", (PyCFunction)Client_attach, METH_VARARGS, NULL },
	{ "close", (PyCFunction)Client_close, METH_NOARGS, NULL },
	{ "health", (PyCFunction)Client_health, METH_NOARGS, NULL },
	{ "set_timeout_ms", (PyCFunction)Client_set_timeout_ms, METH_O, NULL },
	{ "open_namespace", (PyCFunction)Client_open_namespace, METH_VARARGS, NULL },
	{ "lookup", (PyCFunction)Client_lookup, METH_VARARGS, NULL },
	{ "lookup_where", (PyCFunction)Client_lookup_where, METH_VARARGS, NULL },
	{ "bench_lookup", (PyCFunction)Client_bench_lookup, METH_VARARGS, NULL },
	{ "reserve", (PyCFunction)Client_reserve, METH_VARARGS, NULL },
	{ "commit", (PyCFunction)Client_commit, METH_VARARGS, NULL },
	{ "abort", (PyCFunction)Client_abort, METH_VARARGS, NULL },
	{ "acquire", (PyCFunction)Client_acquire, METH_VARARGS, NULL },
	{ "_hbm_lease_for_tests", (PyCFunction)Client_hbm_lease_for_tests, METH_O, NULL },
	{ "put", (PyCFunction)Client_put, METH_VARARGS, NULL },
	{ "get", (PyCFunction)Client_get, METH_VARARGS, NULL },
	{ "drop", (PyCFunction)Client_drop, METH_VARARGS, NULL },
	{ "drop_tenant", (PyCFunction)Client_drop_tenant, METH_VARARGS, NULL },
	{ "drop_namespace", (PyCFunction)Client_drop_namespace, METH_O, NULL },
	{ "stats", (PyCFunction)Client_stats, METH_NOARGS, NULL },
	{ "stats_json", (PyCFunction)Client_stats_json, METH_NOARGS, NULL },
	{ NULL },
};

static PyObject *Client_get_closed(Client *self, void *closure)
{
	(void)closure;
	return PyBool_FromLong(self->closing || !self->c);
}

static PyObject *Client_get_busy(Client *self, void *closure)
{
	(void)closure;
	return PyLong_FromLong(self->busy);
}

/* (on, why not): whether calls go through the session's fast lane. */
static PyObject *Client_get_fast_lane(Client *self, void *closure)
{
	const char *why = "closed";
	int on = self->c && !self->closing ? kvt_fast_lane(self->c, &why) : 0;

	(void)closure;
	return Py_BuildValue("(Os)", on ? Py_True : Py_False, why);
}

static PyGetSetDef Client_getset[] = {
	{ "closed", (getter)Client_get_closed, NULL, NULL, NULL },
	{ "fast_lane", (getter)Client_get_fast_lane, NULL, NULL, NULL },
	{ "busy", (getter)Client_get_busy, NULL, "Calls in flight.", NULL },
	{ NULL },
};

static PyTypeObject Client_Type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kvtier._native.Client",
	.tp_basicsize = sizeof(Client),
	.tp_dealloc = (destructor)Client_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A libkvtier client (see kvtier.Client).",
	.tp_methods = Client_methods,
	.tp_getset = Client_getset,
	.tp_new = Client_new,
};

/* ---- module functions ---- */

/* prompt_keys(secret, tokens: array of uint32, block_tokens, extra) -> bytes */
static PyObject *prompt_keys(PyObject *mod, PyObject *args)
{
	Py_buffer secret, tokens, extra;
	PyObject *out = NULL, *bt_o;
	unsigned long long block_tokens;
	uint32_t *copy = NULL;
	const uint32_t *toks;
	long n;

	(void)mod;
	if (!PyArg_ParseTuple(args, "y*y*Oy*", &secret, &tokens, &bt_o, &extra))
		return NULL;
	if (get_uint(bt_o, "block_tokens", 1, UINT32_MAX, &block_tokens) < 0)
		goto out;
	if (tokens.len % 4) {
		invalid("tokens must be uint32s");
		goto out;
	}
	toks = tokens.buf;
	if ((uintptr_t)toks % _Alignof(uint32_t)) { /* a slice at an odd offset */
		copy = malloc((size_t)tokens.len + 1);
		if (!copy) {
			PyErr_NoMemory();
			goto out;
		}
		memcpy(copy, tokens.buf, (size_t)tokens.len);
		toks = copy;
	}
	size_t max = (size_t)tokens.len / 4 / block_tokens;

	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(max * KVT_KEY_SIZE));
	if (!out)
		goto out;
	n = kvt_key_prompt(secret.buf, (size_t)secret.len, toks,
			   (size_t)tokens.len / 4, block_tokens, extra.buf,
			   (size_t)extra.len, (struct kvt_key *)PyBytes_AS_STRING(out), max);
	if (n < 0) {
		Py_CLEAR(out);
		invalid("secret must be %d..%d bytes (got %zd)", KVT_KEY_SECRET_MIN,
			     KVT_KEY_SECRET_MAX, secret.len);
	}
out:
	free(copy);
	PyBuffer_Release(&secret);
	PyBuffer_Release(&tokens);
	PyBuffer_Release(&extra);
	return out;
}

/* A buffer for kv_ref: C-contiguous, writable where written, of `want`
 * bytes (at least, for a cache). InvalidArgument naming it, else. */
static int ref_buffer(PyObject *o, Py_buffer *b, bool write, uint64_t want, bool at_least,
		      const char *what, Py_ssize_t i)
{
	if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | (write ? PyBUF_WRITABLE : 0)) < 0) {
		PyErr_Clear();
		invalid("kv_ref: %s[%zd] is not a contiguous%s buffer", what, i,
			write ? ", writable" : "");
		return -1;
	}
	if (at_least ? (uint64_t)b->len < want : (uint64_t)b->len != want) {
		invalid("kv_ref: %s[%zd] is %zd bytes, the layout needs %s%llu", what, i,
			b->len, at_least ? "at least " : "", (unsigned long long)want);
		PyBuffer_Release(b);
		return -1;
	}
	return 0;
}

/* The C reference of kernels/kv_layout.h, for tests of the torch path:
 * kv_ref(gather, format, [layer buffers, or the one tensor], num_layers,
 * num_blocks, block_tokens, kv_heads, head_dim, dtype_bytes, [block ids],
 * [page buffers]). Every buffer is checked against the layout: the C
 * reference trusts its arguments. */
static PyObject *kv_ref(PyObject *mod, PyObject *args)
{
	static const char *names[] = { "num_layers", "num_blocks", "block_tokens",
				       "kv_heads", "head_dim", "dtype_bytes" };
	PyObject *bases_o, *ids_o, *pages_o, *fmt_o, *dims_o[6], *result = NULL;
	unsigned long long format, d[6];
	int gather;
	Py_buffer bases[KVT_KV_LAYERS_MAX], *pages = NULL;
	const void *base_ptrs[KVT_KV_LAYERS_MAX];
	void **page_ptrs = NULL;
	uint32_t *ids = NULL, bad;
	Py_ssize_t nb = 0, np = 0, nbases = 0, nheld = 0;
	size_t nids = 0;
	uint64_t chunk, page_bytes, base_bytes;
	struct kvt_kv_layout l;
	const char *why = NULL;

	(void)mod;
	if (!PyArg_ParseTuple(args, "pOO!OOOOOOOO!", &gather, &fmt_o, &PyList_Type,
			      &bases_o, &dims_o[0], &dims_o[1], &dims_o[2], &dims_o[3],
			      &dims_o[4], &dims_o[5], &ids_o, &PyList_Type, &pages_o) ||
	    get_uint(fmt_o, "format", KVT_KV_PER_LAYER, KVT_KV_LAYER_MAJOR, &format) < 0)
		return NULL;
	for (int i = 0; i < 6; i++)
		if (get_uint(dims_o[i], names[i], 1, UINT32_MAX, &d[i]) < 0)
			return NULL;
	if (d[0] > KVT_KV_LAYERS_MAX)
		return invalid("kv_ref: at most %d layers", KVT_KV_LAYERS_MAX);
	/* Sizes, without overflow: chunk = tokens * heads * dim * dtype. */
	if (__builtin_mul_overflow(d[2], d[3], &chunk) ||
	    __builtin_mul_overflow(chunk, d[4], &chunk) ||
	    __builtin_mul_overflow(chunk, d[5], &chunk) ||
	    __builtin_mul_overflow(chunk, 2 * d[0], &page_bytes) ||
	    __builtin_mul_overflow(chunk, 2 * d[1], &base_bytes) ||
	    (format == KVT_KV_LAYER_MAJOR &&
	     __builtin_mul_overflow(base_bytes, d[0], &base_bytes)) ||
	    base_bytes > PY_SSIZE_T_MAX)
		return invalid("kv_ref: the layout is larger than memory");
	nb = PyList_GET_SIZE(bases_o);
	np = PyList_GET_SIZE(pages_o);
	if (nb != (format == KVT_KV_PER_LAYER ? (Py_ssize_t)d[0] : 1))
		return invalid("kv_ref: %zd cache buffers: one per layer (per layer) or one (layer-major)",
			       nb);
	if (parse_ids(ids_o, &ids, &nids) < 0)
		return NULL;
	if ((Py_ssize_t)nids != np) {
		invalid("kv_ref: %zu block ids for %zd pages", nids, np);
		goto out;
	}
	for (; nbases < nb; nbases++) {
		if (ref_buffer(PyList_GET_ITEM(bases_o, nbases), &bases[nbases], !gather,
			       base_bytes, true, "bases", nbases) < 0)
			goto out;
		base_ptrs[nbases] = bases[nbases].buf;
	}
	pages = calloc((size_t)np + 1, sizeof(*pages));
	page_ptrs = calloc((size_t)np + 1, sizeof(*page_ptrs));
	if (!pages || !page_ptrs) {
		PyErr_NoMemory();
		goto out;
	}
	for (; nheld < np; nheld++) {
		if (ref_buffer(PyList_GET_ITEM(pages_o, nheld), &pages[nheld], gather,
			       page_bytes, false, "pages", nheld) < 0)
			goto out;
		page_ptrs[nheld] = pages[nheld].buf;
	}
	if (kvt_kv_layout_init(&l, (enum kvt_kv_format)format, base_ptrs, (uint32_t)d[0],
			       (uint32_t)d[1], (uint32_t)d[2], (uint32_t)d[3], (uint32_t)d[4],
			       (uint32_t)d[5], &why) < 0) {
		invalid("kv_ref: %s", why);
		goto out;
	}
	if (kvt_kv_check_blocks(&l, ids, (const void *const *)page_ptrs, (uint32_t)np, &bad) < 0) {
		invalid("kv_ref: block id %u (entry %u) is not below num_blocks %llu, or its page is not 16-byte aligned",
			ids[bad], bad, d[1]);
		goto out;
	}
	if (gather)
		kvt_kv_gather_cpu(&l, ids, page_ptrs, (uint32_t)np);
	else
		kvt_kv_scatter_cpu(&l, ids, (const void *const *)page_ptrs, (uint32_t)np);
	result = Py_NewRef(Py_None);
out:
	for (Py_ssize_t i = 0; i < nheld; i++)
		PyBuffer_Release(&pages[i]);
	for (Py_ssize_t i = 0; i < nbases; i++)
		PyBuffer_Release(&bases[i]);
	free(pages);
	free(page_ptrs);
	free(ids);
	return result;
}

/* _set_errors(base, {errno: class}): the Python layer's exception classes. */
static PyObject *set_errors(PyObject *mod, PyObject *args)
{
	PyObject *base, *classes;

	(void)mod;
	if (!PyArg_ParseTuple(args, "OO!", &base, &PyDict_Type, &classes))
		return NULL;
	Py_INCREF(base);
	Py_INCREF(classes);
	Py_XSETREF(error_base, base);
	Py_XSETREF(error_classes, classes);
	Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
	{ "prompt_keys", prompt_keys, METH_VARARGS,
	  "prompt_keys(secret, tokens_u32, block_tokens, extra) -> bytes (16 per full block)" },
	{ "kv_ref", kv_ref, METH_VARARGS, "The C layout reference (tests)." },
	{ "_set_errors", set_errors, METH_VARARGS, NULL },
	{ NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "kvtier._native",
	"The CPython binding of libkvtier (use the kvtier package).", -1,
	module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
	PyObject *m;

	if (PyType_Ready(&Maps_Type) < 0 || PyType_Ready(&Client_Type) < 0 ||
	    PyType_Ready(&Page_Type) < 0 || PyType_Ready(&Lease_Type) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (!m)
		return NULL;
	Py_INCREF(&Client_Type);
	Py_INCREF(&Page_Type);
	Py_INCREF(&Lease_Type);
	if (PyModule_AddObject(m, "Client", (PyObject *)&Client_Type) < 0 ||
	    PyModule_AddObject(m, "Page", (PyObject *)&Page_Type) < 0 ||
	    PyModule_AddObject(m, "Lease", (PyObject *)&Lease_Type) < 0 ||
	    PyModule_AddIntConstant(m, "SLOT_RESERVED", KVT_SLOT_RESERVED) < 0 ||
	    PyModule_AddIntConstant(m, "SLOT_PRESENT", KVT_SLOT_PRESENT) < 0 ||
	    PyModule_AddIntConstant(m, "SLOT_BUSY", KVT_SLOT_BUSY) < 0 ||
	    PyModule_AddIntConstant(m, "SLOT_NO_SPACE", KVT_SLOT_NO_SPACE) < 0 ||
	    PyModule_AddIntConstant(m, "KV_PER_LAYER", KVT_KV_PER_LAYER) < 0 ||
	    PyModule_AddIntConstant(m, "KV_LAYER_MAJOR", KVT_KV_LAYER_MAJOR) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
