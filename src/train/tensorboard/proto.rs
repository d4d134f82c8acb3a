//! The protobuf messages of a TensorBoard event file, and the events a run writes.
//!
//! The messages are TensorBoard's own (`tensorboard/compat/proto/event.proto`, `summary.proto`,
//! `tensor.proto`, `tensor_shape.proto`; `plugins/hparams/plugin_data.proto`;
//! `google/protobuf/struct.proto`), declared here with `prost`'s derive macros instead of
//! generated from the `.proto` files: the build needs no `protoc`, and only the fields a run
//! writes are declared (protobuf readers skip the rest). Field numbers and types are those of
//! the `.proto` files; an enum field is declared `int32`, which is its wire type.
//!
//! The events are those `torch.utils.tensorboard.SummaryWriter` writes: a scalar is a
//! `Summary.Value.simple_value` (float32, as `add_scalar` writes it), a text is a string tensor
//! with the `text` plugin's metadata under `<tag>/text_summary` (`add_text`), the hyper-parameters
//! are the `hparams` plugin's `SessionStartInfo` (`add_hparams`' second summary), and a resumed
//! file starts with `SessionLog.START` at its first step (`SummaryWriter(purge_step=...)`).

use std::collections::BTreeMap;

use prost::Message;

/// `tensorboard.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
    #[prost(message, optional, tag = "10")]
    pub source_metadata: Option<SourceMetadata>,
}

pub mod event {
    /// `Event.what`, the fields of the oneof a run writes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// `"brain.Event:2"` in the first event of a file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorboard.SourceMetadata`: which program wrote the file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceMetadata {
    #[prost(string, tag = "1")]
    pub writer: String,
}

/// `tensorboard.SessionLog`; `status` is `SessionStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `SessionLog.SessionStatus.START`: readers drop what earlier files logged at or after the
/// event's step.
pub const SESSION_START: i32 = 1;

/// `tensorboard.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorboard.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "summary_value::Value", tags = "2, 8")]
    pub value: Option<summary_value::Value>,
}

pub mod summary_value {
    /// `Summary.Value.value`, the fields of the oneof a run writes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorboard.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.TensorProto`, as a string tensor; `dtype` is `DataType`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;

/// `tensorboard.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
}

/// `tensorboard.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorboard.hparams.HParamsPluginData`, holding a `SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, HParamValue>,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `google.protobuf.Value`, the kinds a hyper-parameter takes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamValue {
    #[prost(oneof = "hparam_value::Kind", tags = "2, 3, 4")]
    pub kind: Option<hparam_value::Kind>,
}

pub mod hparam_value {
    /// `google.protobuf.Value.kind`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
    }
}

/// What the first event of every file says (`EventFileWriter`'s `file_version`).
pub const FILE_VERSION: &str = "brain.Event:2";
/// The tag under which the `hparams` plugin looks for a run's `SessionStartInfo`.
pub const HPARAMS_SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// The `source_metadata.writer` of the files written here.
const WRITER: &str = "tch-alexnet";

/// The first event of a file.
pub fn file_version(wall_time: f64) -> Event {
    Event {
        wall_time,
        step: 0,
        what: Some(event::What::FileVersion(FILE_VERSION.into())),
        source_metadata: Some(SourceMetadata { writer: WRITER.into() }),
    }
}

/// `SessionLog.START` at `step`: the first step of a resumed run.
pub fn session_start(wall_time: f64, step: i64) -> Event {
    Event {
        wall_time,
        step,
        what: Some(event::What::SessionLog(SessionLog { status: SESSION_START })),
        source_metadata: None,
    }
}

/// One event holding several scalars of the same step (float32, as TensorBoard stores them).
pub fn scalars(wall_time: f64, step: i64, values: &[(&str, f64)]) -> Event {
    let value = values
        .iter()
        .map(|(tag, v)| SummaryValue {
            tag: (*tag).into(),
            metadata: None,
            value: Some(summary_value::Value::SimpleValue(*v as f32)),
        })
        .collect();
    summary(wall_time, step, value)
}

/// A markdown text under `<tag>/text_summary`, as `SummaryWriter.add_text` writes it.
pub fn text(wall_time: f64, step: i64, tag: &str, markdown: &str) -> Event {
    let tensor = TensorProto {
        dtype: DT_STRING,
        tensor_shape: Some(TensorShapeProto { dim: vec![Dim { size: 1 }] }),
        string_val: vec![markdown.as_bytes().to_vec()],
    };
    let value = SummaryValue {
        tag: format!("{tag}/text_summary"),
        // TextPluginData { version: 0 } encodes to no bytes.
        metadata: Some(plugin_metadata("text", Vec::new())),
        value: Some(summary_value::Value::Tensor(tensor)),
    };
    summary(wall_time, step, vec![value])
}

/// The run's hyper-parameters for the `hparams` plugin (no value, only the plugin's metadata,
/// as `torch.utils.tensorboard.summary.hparams` writes its session start).
pub fn hparams(wall_time: f64, step: i64, hparams: BTreeMap<String, HParamValue>) -> Event {
    let content = HParamsPluginData {
        version: 0,
        session_start_info: Some(SessionStartInfo { hparams, start_time_secs: wall_time }),
    };
    let value = SummaryValue {
        tag: HPARAMS_SESSION_START_TAG.into(),
        metadata: Some(plugin_metadata("hparams", content.encode_to_vec())),
        value: None,
    };
    summary(wall_time, step, vec![value])
}

fn plugin_metadata(plugin_name: &str, content: Vec<u8>) -> SummaryMetadata {
    SummaryMetadata { plugin_data: Some(PluginData { plugin_name: plugin_name.into(), content }) }
}

fn summary(wall_time: f64, step: i64, value: Vec<SummaryValue>) -> Event {
    Event { wall_time, step, what: Some(event::What::Summary(Summary { value })), source_metadata: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that Python's `tensorboard.compat.proto.event_pb2` writes for
    /// `Event(wall_time=1.5, step=7, summary=Summary(value=[Summary.Value(tag="a", simple_value=0.25)]))`.
    #[test]
    fn a_scalar_event_encodes_as_protobuf_python_does() {
        let bytes = scalars(1.5, 7, &[("a", 0.25)]).encode_to_vec();
        let expected: &[u8] = &[
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // wall_time: double 1.5
            0x10, 0x07, // step: 7
            0x2a, 0x0a, // summary, 10 bytes
            0x0a, 0x08, // value, 8 bytes
            0x0a, 0x01, b'a', // tag
            0x15, 0, 0, 0x80, 0x3e, // simple_value: float 0.25
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_session_start_event_decodes_to_itself() {
        let event = session_start(2.0, 41);
        let decoded = Event::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, event);
        assert_eq!(decoded.what, Some(event::What::SessionLog(SessionLog { status: SESSION_START })));
    }
}
