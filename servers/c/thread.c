/* c-thread: CS:APP Fig. 12.14, a detached thread per connection, the floor under
 * servers/thread.py.
 *
 * The main thread accepts and creates a peer thread for each client, passing the connected
 * descriptor in its own malloc'd block (Fig. 12.14's fix for the race on a shared connfd); the
 * peer detaches itself, echoes, closes and returns. A stop ends the process, and every thread
 * with it: a detached thread is never joined, and the kernel closes its descriptors.
 */
#include "common.h"

#include <pthread.h>

static void *peer(void *vargp) {
    int connfd = *(int *)vargp;
    pthread_detach(pthread_self());
    free(vargp);
    echo(connfd, NULL);
    close(connfd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG\n", argv[0]);
        return 2;
    }
    int listenfd = open_listenfd(argv[1], atoi(argv[2]), atoi(argv[3]));
    /* Peer threads inherit the blocked stop signals: only the main thread's ppoll takes them. */
    sigset_t sleep_mask = stop_on_signals();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* 1000 clients: 1000 stacks */
    announce_ready(listenfd);
    while (!stop_requested()) {
        int connfd = accept_client(listenfd, &sleep_mask);
        if (connfd < 0) continue;
        int *connfdp = malloc(sizeof(int));
        if (!connfdp) { close(connfd); continue; }
        *connfdp = connfd;
        pthread_t tid;
        int err = pthread_create(&tid, &attr, peer, connfdp);
        if (err) { /* out of threads: drop this client only */
            fprintf(stderr, "servers: pthread_create: %s\n", strerror(err));
            close(connfd);
            free(connfdp);
        }
    }
    close(listenfd);
    return 0; /* exit ends the peer threads; the kernel closes their connections */
}
