//! The rswebrtc GStreamer plugin (whipclientsink among its elements) as a loadable library.
pub use gstrswebrtc::*;
