//! The HTTP ceiling of the machine: actix-web answering POST /invocations with a constant,
//! no model, no parsing. mlapp's requests/s are reported as a fraction of this.
//!
//!     cargo run --release --example trivial_http -- 18082

use actix_web::{web, App, HttpResponse, HttpServer};

async fn invocations(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("text/csv").body("0.5")
}

async fn ping() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18082);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .route("/invocations", web::post().to(invocations))
                .route("/ping", web::get().to(ping))
        })
        .backlog(2048)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
