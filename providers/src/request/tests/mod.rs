//! Tests of request translation.
