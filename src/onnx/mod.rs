//! ONNX files: the protobuf messages ([`proto`]) that a QDQ export of a model is written with.

pub mod proto;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::proto::*;

    /// The bytes protobuf's encoding rules give by hand, so a wrong tag or wire type fails.
    #[test]
    fn messages_encode_with_onnx_field_numbers() {
        let opset = OperatorSetIdProto { domain: Some(String::new()), version: Some(21) };
        assert_eq!(opset.encode_to_vec(), [0x0a, 0x00, 0x10, 21]);
        // An axis of 0 is still written (proto2 presence), and the type is field 20 (varint).
        let axis = AttributeProto {
            name: Some("axis".into()),
            i: Some(0),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        };
        assert_eq!(axis.encode_to_vec(), [0x0a, 4, b'a', b'x', b'i', b's', 0x18, 0x00, 0xa0, 0x01, 0x02]);
        let dim = Dimension { dim_value: None, dim_param: Some("batch".into()) };
        assert_eq!(dim.encode_to_vec(), [0x12, 5, b'b', b'a', b't', b'c', b'h']);
    }

    #[test]
    fn a_model_decodes_to_what_was_encoded() {
        let tensor = TensorProto {
            dims: vec![2, 3],
            data_type: Some(DataType::Int8 as i32),
            name: Some("w".into()),
            raw_data: Some(vec![1, 255, 0, 7, 8, 9]),
        };
        let input = ValueInfoProto {
            name: Some("images".into()),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            Dimension { dim_value: None, dim_param: Some("batch".into()) },
                            Dimension { dim_value: Some(3), dim_param: None },
                        ],
                    }),
                }),
            }),
        };
        let node = NodeProto {
            input: vec!["images".into(), "w".into()],
            output: vec!["y".into()],
            name: Some("matmul_0".into()),
            op_type: Some("MatMul".into()),
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(10),
            producer_name: Some("maskaq".into()),
            graph: Some(GraphProto {
                node: vec![node],
                name: Some("g".into()),
                initializer: vec![tensor],
                input: vec![input],
                output: vec![],
            }),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(21) }],
            metadata_props: vec![StringStringEntryProto {
                key: Some("bits".into()),
                value: Some("W4A4".into()),
            }],
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        assert_eq!(ModelProto::decode(bytes.as_slice()).unwrap(), model);
    }
}
