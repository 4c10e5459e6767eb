//! Prost encoding with small starting buffers. tonic's default codec reserves 8 KiB for the
//! encoder and 8 KiB for the decoder of every stream up front; a coordinator holding a
//! stream per agent paid 16 KiB per idle agent for buffers its small messages never fill.
//! These start at 1 KiB and grow when a larger message (a big graph, a task's output)
//! needs it.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// What a buffer starts at.
const BUFFER_SIZE: usize = 1024;
/// Encoded bytes a stream collects before handing them to the transport.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The codec of every `drover.v1` service and client.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
