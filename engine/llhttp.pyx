# httptools' llhttp, called in C. Included by _engine.pyx.
#
# httptools' Python parser costs a Python call per feed, per callback and per
# accessor; here the client's responses and the target's requests are parsed by
# the same llhttp with C callbacks. The functions are looked up in httptools' own
# parser module (which exports the llhttp API), so there is one llhttp in the
# process and nothing to vendor but the header. An import-time check parses a
# known response and request, and refuses an httptools whose llhttp does not
# match that header.

import os

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef LlhttpApi LLHTTP


cdef void* llhttp_symbol(void* library, const char* name) except NULL:
    cdef void* found = dlsym(library, name)
    if found == NULL:
        raise ImportError(f"httptools' parser module does not export {name.decode()}; "
                          f"loadtester needs httptools>=0.7.1,<0.10")
    return found


cdef int count_headers_for_check(llhttp_t* parser) noexcept:
    (<int*>parser.data)[0] += 1
    return 0


cdef int add_status_for_check(llhttp_t* parser) noexcept:
    # Keep-alive is only known until the message is done: ask here.
    (<int*>parser.data)[1] += parser.status_code + parser.method
    (<int*>parser.data)[2] += LLHTTP.should_keep_alive(parser)
    return 0


cdef int add_url_length_for_check(llhttp_t* parser, const char* at, size_t length) noexcept:
    (<int*>parser.data)[3] += length
    return 0


cdef bint parses_as_expected(llhttp_settings_t* settings, llhttp_type_t kind, bytes message,
                             int status_plus_method, int url_length):
    cdef llhttp_t parser
    cdef int seen[4]
    seen[0] = seen[1] = seen[2] = seen[3] = 0
    LLHTTP.init(&parser, kind, settings)
    parser.data = seen
    return (LLHTTP.execute(&parser, message, len(message)) == HPE_OK and seen[0] == 1
            and seen[1] == status_plus_method and seen[2] == 1 and seen[3] == url_length)


cdef void check_llhttp_abi() except *:
    # One response and one request through every field and callback we use.
    cdef llhttp_settings_t settings
    LLHTTP.settings_init(&settings)
    settings.on_headers_complete = count_headers_for_check
    settings.on_message_complete = add_status_for_check
    settings.on_url = add_url_length_for_check
    if not (parses_as_expected(&settings, HTTP_RESPONSE,
                               b"HTTP/1.1 203 OK\r\nContent-Length: 2\r\n\r\nhi", 203, 0)
            and parses_as_expected(&settings, HTTP_REQUEST,
                                   b"HEAD /four HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_HEAD, 5)):
        raise ImportError("httptools' llhttp does not match the llhttp.h loadtester was "
                          "built with; loadtester needs httptools>=0.7.1,<0.10")


cdef void bind_llhttp() except *:
    import httptools.parser.parser as parser_module
    path = os.fsencode(parser_module.__file__)
    cdef void* library = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if library == NULL:
        raise ImportError(f"cannot open httptools' parser module: {dlerror().decode()}")
    LLHTTP.init = <llhttp_init_fn>llhttp_symbol(library, b"llhttp_init")
    LLHTTP.settings_init = <llhttp_settings_init_fn>llhttp_symbol(library, b"llhttp_settings_init")
    LLHTTP.execute = <llhttp_execute_fn>llhttp_symbol(library, b"llhttp_execute")
    LLHTTP.finish = <llhttp_finish_fn>llhttp_symbol(library, b"llhttp_finish")
    LLHTTP.should_keep_alive = <llhttp_should_keep_alive_fn>llhttp_symbol(
        library, b"llhttp_should_keep_alive")
    check_llhttp_abi()


bind_llhttp()
