//! Batches of what a stream has ready, for one write each.
//!
//! A streaming answer's events come as the upstream's frames are read. When the upstream sends
//! frames back to back, the answering task can still see "nothing ready" between two of them
//! (the next is on its way through the kernel, or another task's turn came first) and would
//! write each as its own segment: one syscall for the gateway and one wake-up for the client
//! per frame. (It saw that after every frame when hyper's client connection task handed the
//! body over one HTTP chunk at a time.) [`ready_batches`] gives the producer
//! one turn of the scheduler (a `yield_now`) whenever it has nothing ready, and ends the batch
//! when a turn brought nothing: frames already in the gateway's buffers join the batch one
//! turn each, and a frame that is not there yet costs one scheduler turn of delay (a few
//! microseconds), never a timer.

use futures_util::{Stream, StreamExt};

/// Groups `stream`'s items into batches of at most `max`: each batch holds every item that is
/// ready, and a batch ends only after `yields` scheduler turns in a row brought nothing new.
/// The first batch takes only what is ready at once, so the first byte is never held back.
pub fn ready_batches<S>(
    stream: S,
    max: usize,
    yields: u32,
) -> impl Stream<Item = Vec<S::Item>> + Send
where
    S: Stream + Send + Unpin,
    S::Item: Send,
{
    futures_util::stream::unfold(
        (stream.fuse(), true),
        move |(mut stream, first_batch)| async move {
            let first = stream.next().await?;
            let mut batch = vec![first];
            // The first batch does not wait for more: the time to the first byte comes first.
            let yields = if first_batch { 0 } else { yields };
            let mut turns = 0;
            while batch.len() < max {
                match futures_util::poll!(stream.next()) {
                    std::task::Poll::Ready(Some(item)) => {
                        batch.push(item);
                        // The producer is keeping up: it gets its turns again.
                        turns = 0;
                    }
                    std::task::Poll::Ready(None) => break,
                    std::task::Poll::Pending if turns < yields => {
                        turns += 1;
                        tokio::task::yield_now().await;
                    }
                    std::task::Poll::Pending => break,
                }
            }
            Some((batch, (stream, false)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[tokio::test]
    async fn ready_items_come_together_and_the_end_is_kept() {
        let batches: Vec<Vec<u32>> = ready_batches(stream::iter(0..10), 4, 1).collect().await;
        assert_eq!(
            batches,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
    }

    #[tokio::test]
    async fn an_item_produced_during_the_yield_joins_the_batch() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let rx = tokio_stream_from(rx);
        // A producer that sends one item, then the next only after being scheduled again:
        // like hyper's connection task handing over one chunk per turn.
        let producer = tokio::spawn(async move {
            for i in 0..3 {
                let _ = tx.send(i);
                tokio::task::yield_now().await;
            }
        });
        let mut batches = Box::pin(ready_batches(rx, 16, 2));
        let first = batches.next().await.unwrap();
        assert_eq!(first, [0], "the first batch waits for nothing");
        let second = batches.next().await.unwrap();
        producer.await.unwrap();
        assert_eq!(
            second,
            [1, 2],
            "items produced during the turns joined the batch"
        );
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    ) -> impl Stream<Item = u32> + Send + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
