/* meshwork bind shim: an app's listen on the wildcard address becomes a listen on its pod IP.
 *
 * Pods on one machine share its loopback, each with its own 127.x address ($POD_IP). An app
 * that binds 0.0.0.0:80 takes port 80 on every address, so a second pod with the same port
 * cannot start. The node agent preloads this library (LD_PRELOAD) into app containers with
 * MESHWORK_BIND_ADDRESS=$POD_IP, and bind() then rewrites exactly two cases:
 *
 *   - AF_INET  0.0.0.0:<port>  -> <MESHWORK_BIND_ADDRESS>:<port>
 *   - AF_INET6 [::]:<port> on a dual-stack socket (IPV6_V6ONLY off) -> [::ffff:<address>]:<port>
 *
 * Every other bind is left alone: explicit addresses, port 0 (a client choosing its source port
 * must keep reaching the outside world), IPv6-only sockets, other families, and any bind at all
 * when the variable is unset or not an IPv4 address. Statically linked programs (Go) never call
 * libc's bind() and are not affected. The agent compiles this file with the machine's cc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int wanted(struct in_addr *out) {
    const char *text = getenv("MESHWORK_BIND_ADDRESS");
    return text != NULL && *text != '\0' && inet_pton(AF_INET, text, out) == 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real_bind = NULL;
    if (real_bind == NULL) {
        real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
        if (real_bind == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    struct in_addr target;
    if (addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;
        if (in4->sin_addr.s_addr == htonl(INADDR_ANY) && in4->sin_port != 0 && wanted(&target)) {
            struct sockaddr_in copy = *in4;
            copy.sin_addr = target;
            return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        int v6only = 1;
        socklen_t optlen = sizeof v6only;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) && in6->sin6_port != 0 && wanted(&target) &&
            getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &optlen) == 0 && v6only == 0) {
            struct sockaddr_in6 copy = *in6;
            memset(&copy.sin6_addr, 0, sizeof copy.sin6_addr);
            copy.sin6_addr.s6_addr[10] = 0xff; /* ::ffff:a.b.c.d, the IPv4-mapped form */
            copy.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&copy.sin6_addr.s6_addr[12], &target, 4);
            return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
        }
    }
    return real_bind(fd, addr, len);
}
