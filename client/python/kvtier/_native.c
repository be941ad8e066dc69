/*
 * kvtier._native: the CPython binding of libkvtier, under the pure-Python
 * API in kvtier/__init__.py. Its job is to call libkvtier with as little
 * overhead as Python allows and to make the shared-memory pages safe to
 * hold from Python:
 *   - a page is handed out as a Page, a buffer exporter that keeps its
 *     Client alive; memoryviews and torch tensors are made from it, with no
 *     copy. Once its lease is released (or its reservation committed or
 *     aborted) the Page refuses new views;
 *   - the client's segments stay mapped while any view of a page exists:
 *     Client.close() ends the session at once if none does, else when the
 *     last one goes, so a view that outlives its client never faults.
 * Calls that wait on the daemon release the GIL. Threads: a Client may be
 * used from several threads (libkvtier serializes its calls); it must not
 * be used in a child after fork (checked: the call raises).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
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

/* ---- Client ---- */

typedef struct {
	PyObject_HEAD
	kvt_client *c;
	pid_t pid;     /* the process that connected */
	bool closing;  /* close() was called: no more calls */
	Py_ssize_t exports; /* buffers of its pages held by views */
#ifdef KVT_PY_CUDA
	kvt_cuda *cuda; /* bound to a GPU (cuda_bind), or NULL */
#endif
} Client;

static PyTypeObject Client_Type;

static void client_finish(Client *self)
{
	if (self->c && self->exports == 0 && self->pid == getpid()) {
		kvt_client *c = self->c;

		self->c = NULL;
		Py_BEGIN_ALLOW_THREADS
#ifdef KVT_PY_CUDA
		if (self->cuda)
			kvt_cuda_close(self->cuda); /* before kvt_close */
		self->cuda = NULL;
#endif
		kvt_close(c);
		Py_END_ALLOW_THREADS
	}
}

/* 0 when the client may be used now; else raises. */
static int client_ready(Client *self)
{
	if (!self->c || self->closing) {
		raise_errno(-EBADF, "the client is closed");
		return -1;
	}
	if (self->pid != getpid()) {
		raise_errno(-EBADF, "the client was made before fork: a forked process must connect anew (gRPC forbids using it)");
		return -1;
	}
	return 0;
}

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
	if ((rc = kvt_connect(addr, &self->c)) < 0) {
		Py_DECREF(self);
		return raise_errno(rc, "cannot create a client");
	}
	return (PyObject *)self;
}

static void Client_dealloc(Client *self)
{
	self->closing = true;
	client_finish(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Client_attach(Client *self, PyObject *args)
{
	const char *name;
	int rc;

	if (!PyArg_ParseTuple(args, "s", &name) || client_ready(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
#ifdef KVT_PY_CUDA
	if (self->cuda)
		rc = kvt_cuda_attach(self->cuda, name);
	else
#endif
		rc = kvt_attach(self->c, name);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_fail(self, rc);
	return PyUnicode_FromString(kvt_tenant(self->c));
}

static PyObject *Client_close(Client *self, PyObject *unused)
{
	(void)unused;
	self->closing = true;
	client_finish(self);
	Py_RETURN_NONE;
}

static PyObject *Client_health(Client *self, PyObject *unused)
{
	int rc;

	(void)unused;
	if (client_ready(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_health(self->c);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_fail(self, rc);
	Py_RETURN_NONE;
}

static PyObject *Client_set_timeout_ms(Client *self, PyObject *args)
{
	int ms;

	if (!PyArg_ParseTuple(args, "i", &ms) || client_ready(self) < 0)
		return NULL;
	if (ms <= 0)
		return raise_errno(-EINVAL, "timeout_ms must be positive");
	kvt_set_timeout_ms(self->c, ms);
	Py_RETURN_NONE;
}

static PyObject *Client_open_namespace(Client *self, PyObject *args)
{
	const char *name;
	unsigned long long page_bytes, idle_ttl_ms;
	unsigned int block_tokens;
	struct kvt_namespace ns;
	int rc;

	if (!PyArg_ParseTuple(args, "sKIK", &name, &page_bytes, &block_tokens,
			      &idle_ttl_ms) || client_ready(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_open_namespace(self->c, name, page_bytes, block_tokens,
				idle_ttl_ms, &ns);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_fail(self, rc);
	return Py_BuildValue("(IKKOO)", ns.id, (unsigned long long)ns.page_bytes,
			     (unsigned long long)ns.slot_stride,
			     ns.created ? Py_True : Py_False,
			     ns.shared ? Py_True : Py_False);
}

/* ---- arguments ---- */

/* A namespace as the Python layer passes it: (id, page_bytes). */
static int parse_ns(PyObject *o, struct kvt_namespace *ns)
{
	unsigned int id;
	unsigned long long page_bytes;

	memset(ns, 0, sizeof(*ns));
	if (!PyArg_ParseTuple(o, "IK;namespace", &id, &page_bytes))
		return -1;
	ns->id = id;
	ns->page_bytes = page_bytes;
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
			invalid("%s[%zd] is not bytes", what, i);
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

/* An optional parent key: None or 16 bytes. */
static int parse_parent(PyObject *o, struct kvt_key *parent, bool *has)
{
	Py_buffer b;

	*has = false;
	if (o == Py_None)
		return 0;
	if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0)
		return -1;
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

/* ---- Page: one page of shared memory, exported as a buffer ---- */

typedef struct {
	PyObject_HEAD
	Client *client;
	void *ptr;
	Py_ssize_t len;
	bool readonly, revoked;
	Py_ssize_t exports;
} Page;

static PyTypeObject Page_Type;

static PyObject *page_new(Client *client, void *ptr, size_t len, bool readonly)
{
	Page *p = PyObject_New(Page, &Page_Type);

	if (!p)
		return NULL;
	Py_INCREF(client);
	p->client = client;
	p->ptr = ptr;
	p->len = (Py_ssize_t)len;
	p->readonly = readonly;
	p->revoked = false;
	p->exports = 0;
	return (PyObject *)p;
}

static void Page_dealloc(Page *p)
{
	Py_XDECREF(p->client);
	PyObject_Free(p);
}

static int Page_getbuffer(Page *p, Py_buffer *view, int flags)
{
	if (p->revoked) {
		PyErr_SetString(PyExc_BufferError,
				"this page's lease or reservation is over: its memory is no longer yours");
		view->obj = NULL;
		return -1;
	}
	if (PyBuffer_FillInfo(view, (PyObject *)p, p->ptr, p->len, p->readonly,
			      flags) < 0)
		return -1;
	p->exports++;
	p->client->exports++;
	return 0;
}

static void Page_releasebuffer(Page *p, Py_buffer *view)
{
	(void)view;
	p->exports--;
	if (--p->client->exports == 0 && p->client->closing)
		client_finish(p->client);
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
	return PyBool_FromLong(p->revoked);
}

static Py_ssize_t Page_len(Page *p)
{
	return p->len;
}

static PyBufferProcs Page_buffer = {
	(getbufferproc)Page_getbuffer,
	(releasebufferproc)Page_releasebuffer,
};

static PyMethodDef Page_methods[] = {
	{ "revoke", (PyCFunction)Page_revoke, METH_NOARGS,
	  "No new views from now on (the lease or reservation is over)." },
	{ NULL },
};

static PyGetSetDef Page_getset[] = {
	{ "revoked", (getter)Page_get_revoked, NULL, "No new views can be made.", NULL },
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

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 || parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_lookup(self->c, &ns, keys, n, &ready, &pending);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0)
		return client_fail(self, rc);
	return Py_BuildValue("(nn)", (Py_ssize_t)ready, (Py_ssize_t)pending);
}

/* The C loop of lookup, for the binding's cost beside C: seconds per call. */
static PyObject *Client_bench_lookup(Client *self, PyObject *args)
{
	PyObject *nso, *keyso;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	size_t n, ready, pending;
	struct timespec t0, t1;
	int iters, rc = 0;

	if (!PyArg_ParseTuple(args, "OOi", &nso, &keyso, &iters) ||
	    client_ready(self) < 0 || parse_ns(nso, &ns) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < iters && rc == 0; i++)
		rc = kvt_lookup(self->c, &ns, keys, n, &ready, &pending);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0)
		return client_fail(self, rc);
	return PyFloat_FromDouble(((double)(t1.tv_sec - t0.tv_sec) +
				   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9) / iters);
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

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 || parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = fn(self->c, &ns, keys, n);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0)
		return client_fail(self, rc);
	Py_RETURN_NONE;
}

static PyObject *Client_commit(Client *self, PyObject *args)
{
	return keys_call(self, args, kvt_commit);
}

static PyObject *Client_abort(Client *self, PyObject *args)
{
	return keys_call(self, args, kvt_abort);
}

/* reserve(ns, parent, keys, priority, duration_ms) -> [(state, Page|None)] */
static PyObject *Client_reserve(Client *self, PyObject *args)
{
	PyObject *nso, *parento, *keyso, *out = NULL;
	struct kvt_retention ret = { 0 };
	struct kvt_namespace ns;
	struct kvt_key *keys, parent;
	struct kvt_slot *slots;
	int priority, rc;
	unsigned long long duration;
	bool has_parent;
	size_t n;

	if (!PyArg_ParseTuple(args, "OOOiK", &nso, &parento, &keyso, &priority,
			      &duration) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 || parse_parent(parento, &parent, &has_parent) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	ret.priority = priority < 0 ? 0 : (unsigned)priority;
	ret.duration_ms = duration;
	slots = calloc(n, sizeof(*slots));
	if (!slots) {
		free(keys);
		return PyErr_NoMemory();
	}
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_reserve(self->c, &ns, has_parent ? &parent : NULL, keys, n,
			 priority < 0 ? NULL : &ret, slots);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0) {
		free(slots);
		return client_fail(self, rc);
	}
	out = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; out && i < n; i++) {
		PyObject *page = Py_None, *item;

		if (slots[i].state == KVT_SLOT_RESERVED) {
			page = page_new(self, slots[i].page, ns.page_bytes, false);
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
	free(slots);
	return out;
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

static int lease_release(Lease *l)
{
	int rc = 0;

	if (l->released)
		return 0;
	l->released = true;
	lease_revoke(l);
	if (l->client->c && l->client->pid == getpid()) {
		Py_BEGIN_ALLOW_THREADS
		rc = kvt_release(l->client->c, &l->lease);
		Py_END_ALLOW_THREADS
	}
	return rc;
}

static void Lease_dealloc(Lease *l)
{
	/* A lease dropped without release gives its pins back now; with its
	 * client closed, the session's end did. */
	if (!l->released && l->client->c && l->client->pid == getpid())
		(void)lease_release(l);
	else if (!l->released)
		free((void *)l->lease.pages);
	Py_XDECREF(l->pages);
	Py_XDECREF(l->client);
	PyObject_Free(l);
}

static PyObject *Lease_release(Lease *l, PyObject *unused)
{
	int rc;

	(void)unused;
	if (l->released)
		Py_RETURN_NONE;
	if (client_ready(l->client) < 0)
		return NULL;
	rc = lease_release(l);
	if (rc < 0)
		return client_fail(l->client, rc);
	Py_RETURN_NONE;
}

static PyObject *Lease_get_pages(Lease *l, void *closure)
{
	(void)closure;
	if (l->released)
		return raise_errno(-EBADF, "the lease was released: its pages are no longer yours");
	Py_INCREF(l->pages);
	return l->pages;
}

static PyObject *Lease_get_count(Lease *l, void *closure)
{
	(void)closure;
	return PyLong_FromSize_t(l->lease.count);
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

static PyObject *Client_acquire(Client *self, PyObject *args)
{
	PyObject *nso, *keyso;
	struct kvt_namespace ns;
	struct kvt_key *keys;
	unsigned int wait_ms;
	Lease *l;
	size_t n;
	int rc;

	if (!PyArg_ParseTuple(args, "OOI", &nso, &keyso, &wait_ms) ||
	    client_ready(self) < 0 || parse_ns(nso, &ns) < 0 ||
	    parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	l = PyObject_New(Lease, &Lease_Type);
	if (!l) {
		free(keys);
		return NULL;
	}
	Py_INCREF(self);
	l->client = self;
	l->pages = NULL;
	l->released = true; /* until the daemon pins */
	memset(&l->lease, 0, sizeof(l->lease));
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_acquire(self->c, &ns, keys, n, wait_ms, &l->lease);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0) {
		Py_DECREF(l);
		return client_fail(self, rc);
	}
	l->released = false;
	l->pages = PyTuple_New((Py_ssize_t)l->lease.count);
	for (size_t i = 0; l->pages && i < l->lease.count; i++) {
		PyObject *p = page_new(self, (void *)l->lease.pages[i],
				       ns.page_bytes, true);

		if (!p) {
			Py_DECREF(l);
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

/* put(ns, parent, keys, pages, priority, duration_ms) -> stored */
static PyObject *Client_put(Client *self, PyObject *args)
{
	PyObject *nso, *parento, *keyso, *pageso, *seq = NULL, *result = NULL;
	struct kvt_retention ret = { 0 };
	struct kvt_namespace ns;
	struct kvt_key *keys = NULL, parent;
	Py_buffer *bufs = NULL;
	const void **ptrs = NULL;
	unsigned long long duration;
	size_t n, stored = 0, held = 0;
	bool has_parent;
	int priority, rc;

	if (!PyArg_ParseTuple(args, "OOOOiK", &nso, &parento, &keyso, &pageso,
			      &priority, &duration) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 || parse_parent(parento, &parent, &has_parent) < 0 ||
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
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)held),
				       &bufs[held], PyBUF_C_CONTIGUOUS) < 0)
			goto out;
		if ((uint64_t)bufs[held].len != ns.page_bytes) {
			invalid("pages[%zu] is %zd bytes; the namespace's pages are %llu",
				     held, bufs[held].len, (unsigned long long)ns.page_bytes);
			PyBuffer_Release(&bufs[held]);
			goto out;
		}
		ptrs[held] = bufs[held].buf;
	}
	ret.priority = priority < 0 ? 0 : (unsigned)priority;
	ret.duration_ms = duration;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_put(self->c, &ns, has_parent ? &parent : NULL, keys, ptrs, n,
		     priority < 0 ? NULL : &ret, &stored);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		client_fail(self, rc);
	else
		result = PyLong_FromSize_t(stored);
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

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 || parse_keys(keyso, &keys, &n, "keys") < 0)
		return NULL;
	list = PyList_New((Py_ssize_t)n);
	dst = calloc(n, sizeof(*dst));
	if (!list || !dst) {
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
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_get(self->c, &ns, keys, n, dst, &got);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		client_fail(self, rc);
		goto fail;
	}
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

	if (!PyArg_ParseTuple(args, "OO", &nso, &keyso) || client_ready(self) < 0 ||
	    parse_ns(nso, &ns) < 0 ||
	    (keyso != Py_None && parse_keys(keyso, &keys, &n, "keys") < 0))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop(self->c, &ns, keys, n, &dropped);
	Py_END_ALLOW_THREADS
	free(keys);
	if (rc < 0)
		return client_fail(self, rc);
	return PyLong_FromSize_t(dropped);
}

static PyObject *Client_drop_tenant(Client *self, PyObject *args)
{
	const char *tenant = NULL;
	size_t dropped = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "z", &tenant) || client_ready(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop_tenant(self->c, tenant, &dropped);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_fail(self, rc);
	return PyLong_FromSize_t(dropped);
}

static PyObject *Client_drop_namespace(Client *self, PyObject *args)
{
	unsigned int id;
	size_t dropped = 0, pending = 0;
	int rc;

	if (!PyArg_ParseTuple(args, "I", &id) || client_ready(self) < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_drop_namespace(self->c, id, &dropped, &pending);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return client_fail(self, rc);
	return Py_BuildValue("(nn)", (Py_ssize_t)dropped, (Py_ssize_t)pending);
}

static void stat_cb(void *arg, const char *name, const char *value)
{
	PyObject *d = arg, *v;

	if (PyErr_Occurred())
		return;
	v = PyUnicode_FromString(value);
	if (v) {
		PyDict_SetItemString(d, name, v);
		Py_DECREF(v);
	}
}

static PyObject *Client_stats(Client *self, PyObject *unused)
{
	PyObject *d;
	int rc;

	(void)unused;
	if (client_ready(self) < 0 || !(d = PyDict_New()))
		return NULL;
	/* The callback builds Python objects: the GIL stays held. */
	rc = kvt_stats(self->c, stat_cb, d);
	if (PyErr_Occurred() || rc < 0) {
		Py_DECREF(d);
		return rc < 0 && !PyErr_Occurred() ? client_fail(self, rc) : NULL;
	}
	return d;
}

/* ---- the GPU data path (libkvtier-cuda), where built with CUDA ---- */

#ifdef KVT_PY_CUDA
/* A cache layout as kvtier.kv passes it: (format, [base addresses],
 * num_layers, num_blocks, block_tokens, kv_heads, head_dim, dtype_bytes). */
static int parse_layout(PyObject *o, struct kvt_kv_layout *l)
{
	PyObject *bases_o;
	unsigned int fmt, layers, blocks, tokens, heads, dim, bytes;
	const void *bases[KVT_KV_LAYERS_MAX];
	const char *why = NULL;
	Py_ssize_t nb;

	if (!PyArg_ParseTuple(o, "IO!IIIIII;layout", &fmt, &PyList_Type, &bases_o,
			      &layers, &blocks, &tokens, &heads, &dim, &bytes))
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
	if (kvt_kv_layout_init(l, (enum kvt_kv_format)fmt, bases, layers, blocks,
			       tokens, heads, dim, bytes, &why) < 0) {
		invalid("layout: %s", why);
		return -1;
	}
	return 0;
}

static int parse_ids(PyObject *o, uint32_t **ids, size_t *n)
{
	PyObject *seq = PySequence_Fast(o, "block ids must be a sequence of ints");

	if (!seq)
		return -1;
	*n = (size_t)PySequence_Fast_GET_SIZE(seq);
	*ids = calloc(*n + 1, sizeof(**ids));
	for (size_t i = 0; *ids && i < *n; i++) {
		(*ids)[i] = (uint32_t)PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i));
		if (PyErr_Occurred()) {
			free(*ids);
			*ids = NULL;
			break;
		}
	}
	Py_DECREF(seq);
	if (!*ids && !PyErr_Occurred())
		PyErr_NoMemory();
	return *ids ? 0 : -1;
}

static PyObject *cuda_fail(Client *self, int rc)
{
	return raise_errno(rc, self->cuda ? kvt_cuda_errmsg(self->cuda) : kvt_errmsg(self->c));
}

static PyObject *Client_cuda_bind(Client *self, PyObject *args)
{
	int device, rc;
	unsigned long long staging;

	if (!PyArg_ParseTuple(args, "iK", &device, &staging) || client_ready(self) < 0)
		return NULL;
	if (self->cuda)
		return invalid("the client is bound to a GPU already");
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_bind(self->c, device, staging, &self->cuda);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		const char *why = kvt_errmsg(self->c);
		char msg[512];

		self->cuda = NULL;
		snprintf(msg, sizeof(msg), "cannot use CUDA device %d: %s", device,
			 why && *why ? why : strerror(-rc));
		return raise_errno(rc, msg);
	}
	Py_RETURN_NONE;
}

/* cuda_offload(ns, layout, block_ids, keys, pages (Page or None per key),
 * stream): commits once the stream has passed the copy. */
static PyObject *Client_cuda_offload(Client *self, PyObject *args)
{
	PyObject *nso, *layout_o, *ids_o, *keys_o, *pages_o, *seq = NULL, *ret = NULL;
	struct kvt_namespace ns;
	struct kvt_kv_layout layout;
	struct kvt_key *keys = NULL;
	struct kvt_slot *slots = NULL;
	uint32_t *ids = NULL;
	unsigned long long stream;
	size_t n, nids;
	int rc;

	if (!PyArg_ParseTuple(args, "OOOOOK", &nso, &layout_o, &ids_o, &keys_o, &pages_o,
			      &stream) || client_ready(self) < 0 || parse_ns(nso, &ns) < 0 ||
	    parse_layout(layout_o, &layout) < 0 || parse_ids(ids_o, &ids, &nids) < 0)
		return NULL;
	if (!self->cuda) {
		raise_errno(-EOPNOTSUPP, "the client is not bound to a GPU (connect with device=)");
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
		    ((Page *)p)->readonly) {
			invalid("pages[%zu] is not an open reservation's page", i);
			goto out;
		}
		slots[i].state = KVT_SLOT_RESERVED;
		slots[i].page = ((Page *)p)->ptr;
		((Page *)p)->revoked = true; /* committed by the library */
	}
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_offload(self->cuda, &ns, &layout, ids, keys, slots, n,
			      (cudaStream_t)(uintptr_t)stream);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		cuda_fail(self, rc);
	else
		ret = Py_NewRef(Py_None);
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
	PyObject *layout_o, *ids_o, *lease_o;
	struct kvt_kv_layout layout;
	unsigned long long stream;
	uint32_t *ids = NULL;
	Lease *l;
	size_t nids;
	int rc;

	if (!PyArg_ParseTuple(args, "OOO!K", &layout_o, &ids_o, &Lease_Type, &lease_o,
			      &stream) || client_ready(self) < 0 ||
	    parse_layout(layout_o, &layout) < 0 || parse_ids(ids_o, &ids, &nids) < 0)
		return NULL;
	l = (Lease *)lease_o;
	if (!self->cuda || l->client != self || l->released || nids < l->lease.count) {
		free(ids);
		return self->cuda ? invalid("the lease is released, another client's, or has more pages than block ids")
				  : raise_errno(-EOPNOTSUPP, "the client is not bound to a GPU (connect with device=)");
	}
	l->released = true;
	lease_revoke(l);
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_onload(self->cuda, &layout, ids, &l->lease, (cudaStream_t)(uintptr_t)stream);
	Py_END_ALLOW_THREADS
	free(ids);
	if (rc < 0)
		return cuda_fail(self, rc);
	Py_RETURN_NONE;
}

static PyObject *Client_cuda_sync(Client *self, PyObject *unused)
{
	int rc;

	(void)unused;
	if (client_ready(self) < 0)
		return NULL;
	if (!self->cuda)
		Py_RETURN_NONE;
	Py_BEGIN_ALLOW_THREADS
	rc = kvt_cuda_sync(self->cuda);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return cuda_fail(self, rc);
	Py_RETURN_NONE;
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
	{ "set_timeout_ms", (PyCFunction)Client_set_timeout_ms, METH_VARARGS, NULL },
	{ "open_namespace", (PyCFunction)Client_open_namespace, METH_VARARGS, NULL },
	{ "lookup", (PyCFunction)Client_lookup, METH_VARARGS, NULL },
	{ "bench_lookup", (PyCFunction)Client_bench_lookup, METH_VARARGS, NULL },
	{ "reserve", (PyCFunction)Client_reserve, METH_VARARGS, NULL },
	{ "commit", (PyCFunction)Client_commit, METH_VARARGS, NULL },
	{ "abort", (PyCFunction)Client_abort, METH_VARARGS, NULL },
	{ "acquire", (PyCFunction)Client_acquire, METH_VARARGS, NULL },
	{ "put", (PyCFunction)Client_put, METH_VARARGS, NULL },
	{ "get", (PyCFunction)Client_get, METH_VARARGS, NULL },
	{ "drop", (PyCFunction)Client_drop, METH_VARARGS, NULL },
	{ "drop_tenant", (PyCFunction)Client_drop_tenant, METH_VARARGS, NULL },
	{ "drop_namespace", (PyCFunction)Client_drop_namespace, METH_VARARGS, NULL },
	{ "stats", (PyCFunction)Client_stats, METH_NOARGS, NULL },
	{ NULL },
};

static PyObject *Client_get_closed(Client *self, void *closure)
{
	(void)closure;
	return PyBool_FromLong(self->closing || !self->c);
}

static PyGetSetDef Client_getset[] = {
	{ "closed", (getter)Client_get_closed, NULL, NULL, NULL },
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
	Py_buffer secret, tokens, extra = { 0 };
	PyObject *out = NULL;
	unsigned long long block_tokens;
	long n;

	(void)mod;
	if (!PyArg_ParseTuple(args, "y*y*Ky*", &secret, &tokens, &block_tokens, &extra))
		return NULL;
	if (tokens.len % 4) {
		invalid("tokens must be uint32s");
		goto out;
	}
	if (block_tokens == 0) {
		invalid("block_tokens must be positive");
		goto out;
	}
	size_t max = (size_t)tokens.len / 4 / block_tokens;

	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(max * KVT_KEY_SIZE));
	if (!out)
		goto out;
	n = kvt_key_prompt(secret.buf, (size_t)secret.len, tokens.buf,
			   (size_t)tokens.len / 4, block_tokens, extra.buf,
			   (size_t)extra.len, (struct kvt_key *)PyBytes_AS_STRING(out), max);
	if (n < 0) {
		Py_CLEAR(out);
		invalid("secret must be %d..%d bytes (got %zd)", KVT_KEY_SECRET_MIN,
			     KVT_KEY_SECRET_MAX, secret.len);
	}
out:
	PyBuffer_Release(&secret);
	PyBuffer_Release(&tokens);
	PyBuffer_Release(&extra);
	return out;
}

/* The C reference of kernels/kv_layout.h, for tests of the torch path:
 * kv_ref(gather, format, [layer buffers, or the one tensor], num_layers,
 * num_blocks, block_tokens, kv_heads, head_dim, dtype_bytes, [block ids],
 * [page buffers]). */
static PyObject *kv_ref(PyObject *mod, PyObject *args)
{
	PyObject *bases_o, *ids_o, *pages_o, *result = NULL;
	unsigned int format, num_layers, num_blocks, block_tokens, kv_heads;
	unsigned int head_dim, dtype_bytes;
	int gather;
	Py_buffer bases[KVT_KV_LAYERS_MAX], *pages = NULL;
	const void *base_ptrs[KVT_KV_LAYERS_MAX];
	void **page_ptrs = NULL;
	uint32_t *ids = NULL, bad;
	Py_ssize_t nb = 0, np = 0, nheld = 0;
	struct kvt_kv_layout l;
	const char *why = NULL;

	(void)mod;
	if (!PyArg_ParseTuple(args, "pIO!IIIIIIO!O!", &gather, &format, &PyList_Type,
			      &bases_o, &num_layers, &num_blocks, &block_tokens, &kv_heads,
			      &head_dim, &dtype_bytes, &PyList_Type, &ids_o,
			      &PyList_Type, &pages_o))
		return NULL;
	nb = PyList_GET_SIZE(bases_o);
	np = PyList_GET_SIZE(pages_o);
	if (nb < 1 || nb > KVT_KV_LAYERS_MAX || np != PyList_GET_SIZE(ids_o) ||
	    (format == KVT_KV_PER_LAYER && (unsigned)nb != num_layers)) {
		invalid("kv_ref: one base per layer (per layer) or one (layer-major), one id per page");
		return NULL;
	}
	for (Py_ssize_t i = 0; i < nb; i++) {
		if (PyObject_GetBuffer(PyList_GET_ITEM(bases_o, i), &bases[i],
				       PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
			for (Py_ssize_t j = 0; j < i; j++)
				PyBuffer_Release(&bases[j]);
			return NULL;
		}
		base_ptrs[i] = bases[i].buf;
	}
	pages = calloc((size_t)np + 1, sizeof(*pages));
	page_ptrs = calloc((size_t)np + 1, sizeof(*page_ptrs));
	ids = calloc((size_t)np + 1, sizeof(*ids));
	if (!pages || !page_ptrs || !ids) {
		PyErr_NoMemory();
		goto out;
	}
	for (; nheld < np; nheld++) {
		if (PyObject_GetBuffer(PyList_GET_ITEM(pages_o, nheld), &pages[nheld],
				       PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
			goto out;
		page_ptrs[nheld] = pages[nheld].buf;
		ids[nheld] = (uint32_t)PyLong_AsUnsignedLong(PyList_GET_ITEM(ids_o, nheld));
		if (PyErr_Occurred())
			goto out;
	}
	if (kvt_kv_layout_init(&l, (enum kvt_kv_format)format, base_ptrs,
			       num_layers, num_blocks, block_tokens, kv_heads, head_dim,
			       dtype_bytes, &why) < 0 ||
	    kvt_kv_check_blocks(&l, ids, (const void *const *)page_ptrs, (uint32_t)np, &bad) < 0) {
		invalid("kv_ref: %s", why ? why : "bad block id or page");
		goto out;
	}
	if (gather)
		kvt_kv_gather_cpu(&l, ids, page_ptrs, (uint32_t)np);
	else
		kvt_kv_scatter_cpu(&l, ids, (const void *const *)page_ptrs, (uint32_t)np);
	result = Py_None;
	Py_INCREF(result);
out:
	for (Py_ssize_t i = 0; i < nheld; i++)
		PyBuffer_Release(&pages[i]);
	for (Py_ssize_t i = 0; i < nb; i++)
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

	if (PyType_Ready(&Client_Type) < 0 || PyType_Ready(&Page_Type) < 0 ||
	    PyType_Ready(&Lease_Type) < 0)
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
