//! The HTTP/1.1 server: actix-web's `HttpServer`, assembled by hand so that every connection's bytes pass
//! through [`Timed`], which gives **every** request head on a connection `server.request_timeout_ms`.
//!
//! actix-http times the head of a connection's *first* request only (`client_request_timeout`); once a
//! keep-alive connection has served a request, a client that starts the next head and never finishes it holds
//! the connection for ever (actix-web issue #928; its keep-alive timer stops at the first byte). Here the clock
//! starts at the first byte read while the connection is between requests and stops when the head is complete
//! (the request reaches the application); when it runs out the client gets `408` and the connection is closed.
//! Bodies have their own deadline where they are read (`body::read_limited`, `server.body_timeout_ms`).
//!
//! Everything else is what `HttpServer` does: workers, the connection limit, keep-alive, graceful shutdown on
//! SIGTERM / SIGINT, and TLS (rustls; HTTP/1.1 only, which is all this API speaks).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Request, Response, body::MessageBody};
use actix_rt::net::TcpStream;
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, fn_service, map_config};
use actix_web::dev::{AppConfig, Server};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ServerSettings;

/// Where a connection is: between requests (or before its first), receiving a head, or serving a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Request,
}

/// A connection's phase, shared by its [`Timed`] stream (which sees bytes) and the application wrapper
/// (which sees requests start and end). One connection lives on one worker thread: `Rc` and `Cell` suffice.
#[derive(Debug)]
struct Clock(Cell<Phase>);

/// Marks its connection as serving a request until dropped (also when the request is dropped unfinished).
struct Serving(Rc<Clock>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.0.set(Phase::Idle);
    }
}

/// What a client that was too slow with its head gets before the connection closes.
const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A connection's stream with the head deadline (see the module docs).
pub struct Timed<T> {
    io: T,
    clock: Rc<Clock>,
    /// `None`: heads are not timed (`server.request_timeout_ms = 0`, as actix-web reads it).
    timeout: Option<Duration>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Timed<T> {
    fn new(io: T, timeout: Duration) -> Self {
        let timeout = (!timeout.is_zero()).then_some(timeout);
        Self { io, clock: Rc::new(Clock(Cell::new(Phase::Idle))), timeout, deadline: None }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Timed<T> {
    /// Best effort: the 408 is small and the connection is between responses, so it goes out in one write.
    fn give_up(&mut self, cx: &mut Context<'_>) -> io::Error {
        let mut io = Pin::new(&mut self.io);
        if let Poll::Ready(Ok(n)) = io.as_mut().poll_write(cx, TIMED_OUT)
            && n == TIMED_OUT.len()
        {
            let _ = io.as_mut().poll_flush(cx);
        }
        let _ = io.poll_shutdown(cx);
        io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Timed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.clock.0.get() != Phase::Head {
            this.deadline = None;
        }
        // Polling the deadline here registers the connection's task to be woken when it passes.
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            return Poll::Ready(Err(this.give_up(cx)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(timeout) = this.timeout
            && matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.clock.0.get() == Phase::Idle
        {
            // The first byte of a head: its clock starts.
            this.clock.0.set(Phase::Head);
            let mut deadline = Box::pin(tokio::time::sleep(timeout));
            let _ = deadline.as_mut().poll(cx);
            this.deadline = Some(deadline);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Starts the server on `listener` (TLS when `tls` is given) with the application `factory` makes per worker.
pub fn start<F, I, S, B>(
    factory: F,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    settings: &ServerSettings,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let builder = actix_server::Server::build();
    let limits = Limits {
        head: Duration::from_millis(settings.request_timeout_ms),
        keep_alive: Duration::from_secs(settings.keep_alive_secs),
        shutdown: builder.graceful_shutdown_signal(),
    };
    let mut builder = builder
        .shutdown_timeout(settings.shutdown_timeout_secs)
        .max_concurrent_connections(settings.max_connections.max(1));
    if settings.workers > 0 {
        builder = builder.workers(settings.workers);
    }
    let builder = match tls {
        None => builder.listen("orderflow-http", listener, move || {
            let head = limits.head;
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, DispatchError>((Timed::new(io, head), peer)))
            })
            .and_then(h1(&factory, &limits))
        })?,
        Some(mut config) => {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder.listen("orderflow-https", listener, move || {
                let head = limits.head;
                actix_tls::accept::rustls_0_23::Acceptor::new(config.clone())
                    .map_err(|_| DispatchError::Io(io::Error::other("TLS handshake failed")))
                    .map(move |io: actix_tls::accept::rustls_0_23::TlsStream<TcpStream>| {
                        let peer = io.get_ref().0.peer_addr().ok();
                        (Timed::new(io, head), peer)
                    })
                    .and_then(h1(&factory, &limits))
            })?
        }
    };
    Ok(builder.run())
}

/// The connection settings every worker's service gets.
#[derive(Clone)]
struct Limits {
    head: Duration,
    keep_alive: Duration,
    shutdown: actix_server::GracefulShutdownSignal,
}

/// The HTTP/1.1 service of one worker over [`Timed`] connections.
fn h1<T, F, I, S, B>(
    factory: &F,
    limits: &Limits,
) -> impl ServiceFactory<
    (Timed<T>, Option<std::net::SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
> + use<T, F, I, S, B>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let app = factory().into_factory().map_err(|e| e.into().error_response());
    let app = map_config(app, |()| AppConfig::default());
    // A request reaching the application has a complete head: its connection's clock stops until the
    // response is ready.
    let app = actix_service::apply_fn_factory(app, |req: Request, service: &_| {
        let serving = req.conn_data::<Rc<Clock>>().map(|clock| {
            clock.0.set(Phase::Request);
            Serving(Rc::clone(clock))
        });
        let call = Service::call(service, req);
        async move {
            let response = call.await;
            drop(serving);
            response
        }
    });
    let shutdown = limits.shutdown.clone();
    HttpService::build()
        .keep_alive(limits.keep_alive)
        .client_request_timeout(limits.head)
        .client_disconnect_timeout(Duration::from_secs(1))
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .on_connect_ext(|io: &Timed<T>, data: &mut actix_http::Extensions| {
            data.insert(Rc::clone(&io.clock));
        })
        .h1::<_, B>(app)
}
