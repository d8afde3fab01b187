pub mod v1 {
    tonic::include_proto!("dupla.v1");
}
