//! The server API's orders as a shard carries them out, whatever its
//! driver: a user's disconnect, the topics and a user's connections. A
//! user is the token `sub` of a hub WebSocket or an event stream (the grant
//! its spill box keeps), or of a `socketio` session's handshake (ended as
//! the server ends a session); connections without a token belong to
//! nobody.

use std::sync::mpsc::Sender;

use super::{Conn, Driver, Shard, Transport};
use crate::protocol::close::CloseCode;
use crate::pubsub::control::{Control, Reply, UserConn};

impl<T: Transport> Shard<T> {
    /// Acts on every order the inbox brought this turn.
    pub(super) fn control_turn<D: Driver<Io = T>>(&mut self, driver: &mut D) {
        if self.pubsub.controls.is_empty() {
            return;
        }
        for control in std::mem::take(&mut self.pubsub.controls) {
            match control {
                Control::Disconnect(order, reply) => {
                    let keys = self.user_conns(&order.user);
                    for &key in &keys {
                        self.close(driver, key, CloseCode(order.code), &order.reason);
                    }
                    let sessions = self.engineio_disconnect(&order.user);
                    answer(reply.as_ref(), Reply::Closed(keys.len() + sessions));
                }
                Control::Topics(reply) => {
                    answer(Some(&reply), Reply::Topics(self.pubsub.hub_topics()));
                }
                Control::Conns(user, reply) => {
                    let conns = self
                        .user_conns(&user)
                        .into_iter()
                        .map(|key| self.describe(&self.conns[key]))
                        .collect();
                    answer(Some(&reply), Reply::Conns(conns));
                }
            }
        }
    }

    /// The open connections whose token is `user`'s.
    fn user_conns(&self, user: &str) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.io.dying() && (c.session.is_open() || c.session.is_streaming()))
            .filter(|(_, c)| {
                c.session
                    .spill
                    .as_deref()
                    .and_then(|s| s.grant.as_deref())
                    .is_some_and(|g| &*g.sub == user)
            })
            .map(|(key, _)| key)
            .collect()
    }

    fn describe(&self, conn: &Conn<T>) -> UserConn {
        let spill = conn.session.spill.as_deref();
        UserConn {
            shard: self.shard_id,
            peer: super::gate::socket_peer(conn.io.socket()),
            topics: spill.map_or(0, |s| s.subs.len()),
            exp: spill.and_then(|s| s.grant.as_ref()?.exp),
        }
    }
}

/// The asker may have given up waiting: nobody to tell then.
fn answer(reply: Option<&Sender<Reply>>, what: Reply) {
    if let Some(reply) = reply {
        let _ = reply.send(what);
    }
}
