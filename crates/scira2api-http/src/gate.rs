//! The gate: the one middleware in front of every route. It runs, in this order,
//!
//! 1. observation ([`crate::observe`]): the request id, timing, metrics, the access log;
//! 2. CORS ([`crate::cors`]): actix-cors for a browser's cross-origin request or preflight,
//!    only `Vary` for any other request (so a preflight never needs a key);
//! 3. auth ([`crate::auth`]): the client's key, or the admin key on the operator's routes;
//! 4. the rate limit ([`crate::limit`]), when a limiter is configured (last, so that it can
//!    tell clients apart by key).
//!
//! One service instead of a layer per step: each `actix_web` middleware layer costs a boxed
//! future and a dynamic call per request, and every step would look the request's path up in
//! the route table and the gateway up in the app data again. Here a request pays for one boxed
//! future, one route lookup, and none of the app-data lookups.

use crate::route_table::RouteSpec;
use actix_cors::{Cors, CorsMiddleware};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::web;
use futures_util::future::LocalBoxFuture;
use scira2api_core::Gateway;
use std::rc::Rc;

/// What auth and the limiter answer with: the route's body, or one of their own errors.
type Guarded<B> = EitherBody<EitherBody<B>>;

/// What the gate answers with: actix-cors's body around [`Guarded`], and the observation's
/// (an error JSON it may write in place of a body-less 4xx) around that.
pub(crate) type GateBody<B> = EitherBody<EitherBody<Guarded<B>>>;

/// The gate's [`Transform`]: built once per worker by [`crate::configure`].
pub(crate) struct Gate {
    gateway: web::Data<Gateway>,
    cors: Cors,
}

impl Gate {
    /// A gate for `gateway`'s settings, with `cors` for the requests that need it.
    pub(crate) fn new(gateway: web::Data<Gateway>, cors: Cors) -> Gate {
        Gate { gateway, cors }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Gate
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<GateBody<B>>;
    type Error = actix_web::Error;
    type InitError = ();
    type Transform = GateService<S>;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let guard = Rc::new(Guard {
            gateway: self.gateway.clone(),
            inner: Rc::new(service),
        });
        let cors = self.cors.new_transform(Rc::clone(&guard));
        Box::pin(async move {
            let cors = cors.await?;
            Ok(GateService(Rc::new(Parts { guard, cors })))
        })
    }
}

/// Auth and the limiter in front of the routes: what actix-cors calls for a CORS request, and
/// what the gate runs itself for any other.
pub(crate) struct Guard<S> {
    gateway: web::Data<Gateway>,
    inner: Rc<S>,
}

impl<S, B> Guard<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    /// Auth, then the rate limit (which passes everything on when no limiter exists), then
    /// the route.
    async fn run(
        &self,
        route: Option<&RouteSpec>,
        req: ServiceRequest,
    ) -> Result<ServiceResponse<Guarded<B>>, actix_web::Error> {
        let gw = &self.gateway;
        crate::auth::require_key(gw, route, req, |req| {
            crate::limit::rate_limit(gw, route, req, |req| self.inner.call(req))
        })
        .await
    }
}

impl<S, B> Service<ServiceRequest> for Guard<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<Guarded<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    /// Only a CORS request comes this way (through actix-cors).
    fn call(&self, req: ServiceRequest) -> Self::Future {
        let guard = Guard {
            gateway: self.gateway.clone(),
            inner: Rc::clone(&self.inner),
        };
        Box::pin(async move {
            let route = crate::route_table::find(req.path());
            guard.run(route, req).await
        })
    }
}

/// The parts of a [`GateService`]: the guard, and actix-cors in front of the same guard.
pub(crate) struct Parts<S> {
    guard: Rc<Guard<S>>,
    cors: CorsMiddleware<Rc<Guard<S>>>,
}

/// The service [`Gate`] makes.
pub(crate) struct GateService<S>(Rc<Parts<S>>);

impl<S, B> Service<ServiceRequest> for GateService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<GateBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.guard.inner.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let parts = Rc::clone(&self.0);
        Box::pin(async move {
            let route = crate::route_table::find(req.path());
            let (parts, guard) = (&parts, &parts.guard);
            crate::observe::observe(&guard.gateway, route, req, |req| async move {
                if crate::cors::is_cors_request(&req) {
                    return parts.cors.call(req).await;
                }
                let mut res = guard.run(route, req).await?;
                crate::cors::add_vary(res.headers_mut());
                Ok(res.map_into_left_body())
            })
            .await
        })
    }
}
